"""graph_file: a graph.pb read with its large constants cut out of what protobuf parses."""
import mmap

import numpy as np
import pytest
import tensorflow as tf

from helper import UserError
from roadseg.deploy import graph_file, graph_surgery
from synthetic import frozen_tiny_graph

tf1 = tf.compat.v1


@pytest.fixture(scope='module', params=['frozen', 'optimised'])
def graph_path(request, tmp_path_factory):
    """graph.pb of a tiny frozen FCN-8s, or of it with 8-bit weights (as optimise writes)."""
    graph_def = frozen_tiny_graph(3)
    if request.param == 'optimised':
        graph_def, _ = graph_surgery.quantize_weights(graph_def)
    path = tmp_path_factory.mktemp(request.param) / 'graph.pb'
    path.write_bytes(graph_def.SerializeToString())
    return str(path)


def _parsed(data):
    graph_def = tf1.GraphDef()
    graph_def.ParseFromString(data)
    return graph_def


def test_a_lean_graph_with_its_contents_put_back_is_the_file_s_graph(graph_path):
    data = open(graph_path, 'rb').read()
    graph_def, contents = graph_file.read_graph_def(graph_path, allow_any_op=True)
    consts = {node.name: node for node in graph_def.node if node.op == 'Const'}
    assert len(contents) >= 3 and set(contents) <= set(consts)
    for name, content in contents.items():
        assert consts[name].attr['value'].tensor.tensor_content == b''
        assert len(content) >= 64
    assert graph_def != _parsed(data)
    graph_file.restore(graph_def, contents)
    assert graph_def == _parsed(data)


def test_the_weights_split_from_a_lean_graph_are_those_of_the_parsed_graph(graph_path):
    """What the loader gets: the same graph (other constants put back) and the same weights,
    bit for bit and 64-byte aligned, as from the graph protobuf parses whole."""
    whole, whole_weights = graph_surgery.split_matmul_weights(
        _parsed(open(graph_path, 'rb').read()))
    lean, lean_weights = graph_surgery.split_matmul_weights(
        *graph_file.read_graph_def(graph_path, allow_any_op=True))
    assert lean.SerializeToString() == whole.SerializeToString()
    assert sorted(lean_weights) == sorted(whole_weights) and len(lean_weights) == 2
    for name, weight in lean_weights.items():
        expected = whole_weights[name]
        assert weight.values.ctypes.data % 64 == 0
        assert weight.values.dtype == expected.values.dtype
        np.testing.assert_array_equal(weight.values, expected.values)
        assert (weight.scale, weight.low) == (expected.scale, expected.low)


def test_nodes_below_the_size_are_parsed_whole(graph_path):
    sizes = {node.name: node.ByteSize() for node in _parsed(open(graph_path, 'rb').read()).node}
    second_largest = sorted(sizes.values())[-2]
    _, contents = graph_file.read_graph_def(graph_path, True, min_bytes=second_largest)
    assert sorted(contents) == sorted(name for name, size in sizes.items()
                                      if size >= second_largest)
    assert len(contents) == 2


def test_a_damaged_graph_reads_as_protobuf_reads_it_or_is_one_error_naming_it(graph_path,
                                                                           tmp_path):
    """Cut short anywhere or with bytes changed: where protobuf parses the bytes, the lean
    read gives the same graph; where it does not, a UserError names the file."""
    data = open(graph_path, 'rb').read()
    rng = np.random.default_rng(7)
    damaged = [data[:end] for end in list(range(1, 300)) + list(rng.integers(1, len(data), 60))]
    for _ in range(120):
        changed = bytearray(data)
        for at in rng.integers(0, len(data), rng.integers(1, 4)):
            changed[at] = rng.integers(0, 256)
        damaged.append(bytes(changed))
    path = tmp_path / 'graph.pb'
    outcomes = set()
    for case in damaged:
        path.write_bytes(case)
        try:
            expected = _parsed(case)
        except Exception:  # noqa: BLE001 - whatever protobuf raises, the read must fail
            expected = None
        try:
            graph_def, contents = graph_file.read_graph_def(str(path), allow_any_op=True)
        except UserError as error:
            assert expected is None, 'protobuf parses what the lean read refuses'
            assert str(error).startswith('cannot read the graph %s: ' % path)
            outcomes.add('error')
            continue
        assert expected is not None
        graph_file.restore(graph_def, contents)
        assert graph_def == expected
        outcomes.add('read')
    assert outcomes == {'error', 'read'}


def test_a_file_system_that_cannot_map_files_reads_the_same(graph_path, monkeypatch):
    expected, expected_contents = graph_file.read_graph_def(graph_path, allow_any_op=True)

    def refuse(*args, **kwargs):
        raise OSError(19, 'No such device')
    monkeypatch.setattr(mmap, 'mmap', refuse)
    graph_def, contents = graph_file.read_graph_def(graph_path, allow_any_op=True)
    assert graph_def == expected and sorted(contents) == sorted(expected_contents)
    for name, content in contents.items():
        np.testing.assert_array_equal(content, expected_contents[name])


def test_groups_nested_without_end_are_one_error(tmp_path):
    path = tmp_path / 'graph.pb'
    path.write_bytes(b'\x0b' * 100000)  # field 1, start of a group, again and again
    with pytest.raises(UserError, match='cannot read the graph %s: ' % path):
        graph_file.read_graph_def(str(path))


def _by_name(graph_def):
    return {node.name: node for node in graph_def.node}


def test_a_graph_written_aligned_is_the_same_graph_with_its_weights_fed_without_a_copy(
        graph_path, tmp_path):
    """Only the order of the nodes changes; every large content starts at a multiple of 64 in
    the file, and the loader's weights are the mapped file itself (read-only), not copies."""
    graph_def = _parsed(open(graph_path, 'rb').read())
    path = tmp_path / 'graph.pb'
    path.write_bytes(graph_file.aligned_bytes(graph_def))
    written = _parsed(path.read_bytes())
    assert _by_name(written) == _by_name(graph_def) and written.versions == graph_def.versions
    lean, contents = graph_file.read_graph_def(str(path), allow_any_op=True)
    offsets = [content.ctypes.data % graph_file.ALIGNMENT for content in contents.values()]
    assert len(offsets) >= 3 and offsets == [0] * len(offsets)
    _, weights = graph_surgery.split_matmul_weights(lean, contents)
    assert len(weights) == 2
    assert not any(weight.values.flags.writeable for weight in weights.values())


def test_a_graph_with_no_small_nodes_to_align_by_is_written_as_it_is(tmp_path):
    graph_def = tf1.GraphDef()
    node = graph_def.node.add(name='weights', op='Const')
    node.attr['dtype'].type = tf.float32.as_datatype_enum
    node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(
        np.arange(3000, dtype=np.float32).reshape(30, 100)))
    path = tmp_path / 'graph.pb'
    path.write_bytes(graph_file.aligned_bytes(graph_def))
    assert _parsed(path.read_bytes()) == graph_def
    lean, contents = graph_file.read_graph_def(str(path))
    graph_file.restore(lean, contents)
    assert lean == graph_def
