"""The label tables, row by row, against the reference tables beside the repository
(shared/reference: the official cityscapesScripts labels.py, Mapillary Vistas' config.json of
v1.2 and v2.0): a wrong colour, id or flag anywhere would mislabel a class."""
import ast
import os
import re

import pytest

import cityscape_labels
import data_loader
import mapillary_labels
import synthetic


def _reference_rows(file_name, heading):
    """The rows of the first markdown table after the heading starting with `heading`, as
    lists of cells, without the header and separator rows."""
    path = os.path.join(synthetic.REFERENCE_DIR, file_name)
    if not os.path.exists(path):
        synthetic.unavailable('%s is missing' % path)
    with open(path) as f:
        text = f.read()
    start = text.index(heading) if heading else 0
    rows = []
    for line in text[start:].splitlines():
        if line.startswith('|'):
            rows.append([cell.strip() for cell in line.strip().strip('|').split('|')])
        elif rows:
            break
    return rows[2:]


def _colour(cell):
    return tuple(ast.literal_eval(cell))


def _flag(cell):
    return {'true': True, 'false': False}[cell.lower()]


def test_the_cityscapes_table_is_the_official_one():
    rows = _reference_rows('cityscapes_labels.md', '| name | id |')
    assert len(rows) == len(cityscape_labels.LABELS) == 35
    for label, row in zip(cityscape_labels.LABELS, rows):
        name, label_id, train_id, category, category_id, instances, ignored, colour = row
        assert label == cityscape_labels.Label(
            name, int(label_id), int(train_id), category, int(category_id), _flag(instances),
            _flag(ignored), _colour(colour)), row


def test_the_vistas_v1_2_table_is_its_config_json():
    rows = _reference_rows('mapillary_vistas_labels.md', '## v1.2')
    assert len(rows) == len(mapillary_labels.LABELS_V12) == 66
    for index, (label, row) in enumerate(zip(mapillary_labels.LABELS_V12, rows)):
        label_id, name, readable, colour, _, evaluated = row
        assert int(label_id) == index
        assert label == mapillary_labels.Label(name, readable, _colour(colour)), row
        # The one label not evaluated is the one the label set ignores.
        trained = index < data_loader.get_label_set('mapillary').num_classes
        assert _flag(evaluated) == trained, row


def test_the_vistas_v2_0_table_is_its_config_json():
    rows = _reference_rows('mapillary_vistas_labels.md', '## v2.0')
    assert len(rows) == len(mapillary_labels.LABELS_V20) == 124
    for index, (label, row) in enumerate(zip(mapillary_labels.LABELS_V20, rows)):
        label_id, readable, colour = row
        assert int(label_id) == index
        assert (label.readable, label.color) == (readable, _colour(colour)), row
    names = [label.name for label in mapillary_labels.LABELS_V20]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r'[a-z-]+(--[a-z0-9-]+)+', name) for name in names), names


@pytest.mark.parametrize('file_name, heading', [('cityscapes_labels.md', '| name | id |'),
                                                ('mapillary_vistas_labels.md', '## v2.0')])
def test_the_reference_reader_finds_whole_tables(file_name, heading):
    rows = _reference_rows(file_name, heading)
    assert rows and len({len(row) for row in rows}) == 1
