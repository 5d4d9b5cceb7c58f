"""Reading a graph.pb with its large constants left in the file until they are wanted.

Parsing a frozen VGG16 graph (538 MB) copies fc6's and fc7's weights into protobuf's memory;
reading a tensor's tensor_content copies them again into a Python bytes object, and aligning
them for the session a third time. Here the file is mapped, and the tensor_content of every
Const node of LARGE_BYTES or more is cut out of the bytes protobuf parses (walking protobuf's
wire format down to it). What parses is the rest of the graph, a few MB; each content is then
copied once, from the mapped file to wherever it is used (graph_surgery.split_matmul_weights),
or back into its node (restore). The graphs this tool writes have those contents at aligned
offsets in the file (aligned_bytes): a session is fed the mapped weights with no copy at all.
"""
import mmap

import numpy as np

from roadseg import model_dir

# Nodes this large have their tensor contents cut: the weights of VGG16 and of the small
# networks of the tests alike (those that stay constants are put back, one copy each).
LARGE_BYTES = 1024
# Field numbers: GraphDef.node; NodeDef.op and .attr (a map: entry key 1, value 2); then
# from the entry's value to AttrValue.tensor and TensorProto.tensor_content.
_NODE, _NODE_OP, _NODE_ATTR, _ENTRY_KEY = 1, 2, 5, 1
_VALUE_TO_CONTENT = (2, 8, 4)
_LENGTH_DELIMITED = 2


def read_graph_def(path, allow_any_op=False, min_bytes=LARGE_BYTES):
    """(model_dir.read_graph_def of path with the tensor contents of its Consts of min_bytes or
    more left out, {name of such a Const: uint8 array of its tensor_content, a view of the
    mapped file})."""
    cut = {}

    def read():
        data, contents = read_lean(path, min_bytes)
        cut.update(contents)
        return data
    graph_def = model_dir.parse_graph_def(path, read, allow_any_op)
    return graph_def, _named(graph_def, cut)


def read_lean(path, min_bytes=LARGE_BYTES):
    """(the GraphDef bytes of the graph in path without the tensor contents of its Consts of
    min_bytes or more, {index of such a node in the graph: uint8 array of its tensor_content,
    a view of the mapped file}). A ValueError if the file is not a protobuf message."""
    with open(path, 'rb') as f:
        try:
            data = _mapped(f)
        except ValueError:  # an empty file cannot be mapped
            return b'', {}
        except OSError:  # nor can a file on some file systems
            data = f.read()
    try:
        return _cut(memoryview(data), min_bytes)
    except IndexError:
        raise ValueError('truncated protobuf message') from None
    except RecursionError:  # groups nested deeper than any message of a graph
        raise ValueError('protobuf groups nested too deep') from None


def _mapped(f):
    """The file f mapped read-only; on Linux with its pages mapped at once (MAP_POPULATE),
    which costs less than a fault at the first touch of each page of the weights."""
    if hasattr(mmap, 'MAP_POPULATE'):
        return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                         prot=mmap.PROT_READ)
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def restore(graph_def, contents):
    """Puts the contents read_graph_def cut out back into the Consts of graph_def that have
    them, for a graph whose large constants are to stay in it."""
    for node in graph_def.node:
        if node.name in contents:
            node.attr['value'].tensor.tensor_content = contents[node.name].tobytes()


def _named(graph_def, contents):
    """read_lean's contents keyed by node name instead of index."""
    return {graph_def.node[index].name: content for index, content in contents.items()}


def _cut(data, min_bytes):
    """read_lean of data, a memoryview of the whole file."""
    pieces, contents, node_index = [], {}, 0
    for number, wire, field_start, start, end in _fields(data, 0, len(data)):
        if number == _NODE and wire == _LENGTH_DELIMITED:
            cut = _cut_node(data, start, end) if end - start >= min_bytes else None
            if cut is not None:
                node, (content_start, content_end) = cut
                pieces.append(_header(number, len(node)) + node)
                contents[node_index] = np.frombuffer(data[content_start:content_end], np.uint8)
            node_index += 1
            if cut is not None:
                continue
        pieces.append(data[field_start:end])
    return b''.join(pieces), contents


def _cut_node(data, start, end):
    """(the NodeDef data[start:end] without its tensor_content, (start, end) of that content
    in data), or None unless it is a Const with one tensor_content in its 'value' attribute."""
    fields = list(_fields(data, start, end))
    if _last_bytes(data, fields, _NODE_OP) != b'Const':
        return None
    pieces, found = [], []
    for number, wire, field_start, value_start, value_end in fields:
        if number == _NODE_ATTR and wire == _LENGTH_DELIMITED and _last_bytes(
                data, list(_fields(data, value_start, value_end)), _ENTRY_KEY) == b'value':
            before = len(found)
            entry = _without(data, value_start, value_end, _VALUE_TO_CONTENT, found)
            if len(found) > before:
                pieces.append(_header(number, len(entry)) + entry)
                continue
        pieces.append(data[field_start:value_end])
    if len(found) != 1:
        return None
    return b''.join(pieces), found[0]


def _last_bytes(data, fields, number):
    """The value of the last length-delimited field of number among fields (protobuf's
    last one wins), or None."""
    values = [data[start:end] for field, wire, _, start, end in fields
              if field == number and wire == _LENGTH_DELIMITED]
    return bytes(values[-1]) if values else None


def _without(data, start, end, path, found):
    """The message data[start:end] with the field at path (field numbers, outermost first)
    left out, its (start, end) appended to found."""
    pieces = []
    for number, wire, field_start, inner_start, inner_end in _fields(data, start, end):
        if number == path[0] and wire == _LENGTH_DELIMITED:
            if len(path) == 1:
                found.append((inner_start, inner_end))
                continue
            before = len(found)
            inner = _without(data, inner_start, inner_end, path[1:], found)
            if len(found) > before:
                pieces.append(_header(number, len(inner)) + inner)
                continue
        pieces.append(data[field_start:inner_end])
    return b''.join(pieces)


def _fields(data, start, end):
    """(field number, wire type, start of its tag, start of its value, end) of every field of
    the message data[start:end]; a length-delimited value starts after its length."""
    position = start
    while position < end:
        field_start = position
        number, wire, position = _tag(data, position)
        position, value_end = _value(data, position, number, wire)
        if value_end > end:
            raise ValueError('a protobuf field at byte %d ends past its message' % field_start)
        yield number, wire, field_start, position, value_end
        position = value_end


def _tag(data, position):
    """(field number, wire type, the position after them) of the tag at position."""
    tag, after = _varint(data, position)
    if not 0 < tag >> 3 < 1 << 29 or tag & 7 > 5:
        raise ValueError('damaged protobuf tag at byte %d' % position)
    return tag >> 3, tag & 7, after


def _value(data, position, number, wire):
    """(start, end) of the value of a field of wire type at position (a group's: its fields
    up to its end tag)."""
    if wire == 0:
        return position, _varint(data, position)[1]
    if wire == 1 or wire == 5:
        return position, position + (8 if wire == 1 else 4)
    if wire == _LENGTH_DELIMITED:
        length, start = _varint(data, position)
        return start, start + length
    if wire == 3:
        start = position
        while True:
            inner_number, inner_wire, position = _tag(data, position)
            if inner_wire == 4:
                if inner_number != number:
                    raise ValueError('unmatched protobuf group at byte %d' % start)
                return start, position
            position = _value(data, position, inner_number, inner_wire)[1]
    raise ValueError('unexpected end of a protobuf group at byte %d' % position)


def _varint(data, position):
    """(the varint at position in data, the position after it)."""
    value, shift = 0, 0
    while True:
        byte = data[position]
        value |= (byte & 0x7f) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError('damaged varint at byte %d' % position)


def _header(number, length):
    """The tag and length of a length-delimited field."""
    return _encode_varint(number << 3 | _LENGTH_DELIMITED) + _encode_varint(length)


def _encode_varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7f | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ------------------------------------------------------------------------------- writing

ALIGNMENT = 64  # Eigen's: a session is fed an array at such an address without copying it


def aligned_bytes(graph_def, min_bytes=LARGE_BYTES):
    """graph_def serialized with its nodes in an order that puts the tensor_content of each
    Const of min_bytes or more at a multiple of ALIGNMENT in the file, where one can be found
    (a graph's nodes may come in any order). read_graph_def's views of such contents are then
    fed to a session as they are, with no copy of the weights."""
    head = type(graph_def)()
    head.CopyFrom(graph_def)
    del head.node[:]
    pieces = [head.SerializeToString()]  # versions and library first: any order parses
    position = len(pieces[0])
    small, large = [], []
    for node in graph_def.node:
        body = node.SerializeToString()
        entry = _header(_NODE, len(body)) + body
        cut = _cut_node(memoryview(entry), len(entry) - len(body), len(entry)) \
            if len(body) >= min_bytes else None
        if cut is None:
            small.append(entry)
        else:
            large.append((entry, cut[1][0]))
    for entry, content_start in large:
        chosen = _subset_with_remainder(small, -(position + content_start) % ALIGNMENT)
        for index in sorted(chosen, reverse=True):
            pieces.append(small.pop(index))
            position += len(pieces[-1])
        pieces.append(entry)
        position += len(entry)
    return b''.join(pieces + small)


def _subset_with_remainder(entries, remainder):
    """Indexes of entries whose lengths add up to remainder modulo ALIGNMENT (the fewest
    found by a walk over the entries in order), or none if no subset does."""
    reached = {0: ()}
    for index, entry in enumerate(entries):
        if remainder in reached:
            break
        for total, chosen in list(reached.items()):
            reached.setdefault((total + len(entry)) % ALIGNMENT, chosen + (index,))
    return reached.get(remainder, ())
