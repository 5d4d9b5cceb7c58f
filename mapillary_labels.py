"""Mapillary Vistas label tables (v1.2 and v2.0) and the label sets derived from them.

The tables follow the datasets' config.json files (config_v1.2.json and config_v2.0.json in the
v2.0 release): a label's index in the table is the value stored in the label PNGs, which are
palette images, so labels are decoded by palette index, never by colour (colours repeat). A
dataset's own config.json is checked against these tables by `check_config`.
"""
import collections
import functools

import numpy as np

from cityscape_labels import IGNORE_ID, LabelSet
from helper import UserError

Label = collections.namedtuple('Label', ['name', 'readable', 'color'])

# v1.2: 66 labels. The last, 'void--unlabeled', is the one not evaluated: it is the ignore id.
LABELS_V12 = [
    Label('animal--bird', 'Bird', (165, 42, 42)),
    Label('animal--ground-animal', 'Ground Animal', (0, 192, 0)),
    Label('construction--barrier--curb', 'Curb', (196, 196, 196)),
    Label('construction--barrier--fence', 'Fence', (190, 153, 153)),
    Label('construction--barrier--guard-rail', 'Guard Rail', (180, 165, 180)),
    Label('construction--barrier--other-barrier', 'Barrier', (90, 120, 150)),
    Label('construction--barrier--wall', 'Wall', (102, 102, 156)),
    Label('construction--flat--bike-lane', 'Bike Lane', (128, 64, 255)),
    Label('construction--flat--crosswalk-plain', 'Crosswalk - Plain', (140, 140, 200)),
    Label('construction--flat--curb-cut', 'Curb Cut', (170, 170, 170)),
    Label('construction--flat--parking', 'Parking', (250, 170, 160)),
    Label('construction--flat--pedestrian-area', 'Pedestrian Area', (96, 96, 96)),
    Label('construction--flat--rail-track', 'Rail Track', (230, 150, 140)),
    Label('construction--flat--road', 'Road', (128, 64, 128)),
    Label('construction--flat--service-lane', 'Service Lane', (110, 110, 110)),
    Label('construction--flat--sidewalk', 'Sidewalk', (244, 35, 232)),
    Label('construction--structure--bridge', 'Bridge', (150, 100, 100)),
    Label('construction--structure--building', 'Building', (70, 70, 70)),
    Label('construction--structure--tunnel', 'Tunnel', (150, 120, 90)),
    Label('human--person', 'Person', (220, 20, 60)),
    Label('human--rider--bicyclist', 'Bicyclist', (255, 0, 0)),
    Label('human--rider--motorcyclist', 'Motorcyclist', (255, 0, 100)),
    Label('human--rider--other-rider', 'Other Rider', (255, 0, 200)),
    Label('marking--crosswalk-zebra', 'Lane Marking - Crosswalk', (200, 128, 128)),
    Label('marking--general', 'Lane Marking - General', (255, 255, 255)),
    Label('nature--mountain', 'Mountain', (64, 170, 64)),
    Label('nature--sand', 'Sand', (230, 160, 50)),
    Label('nature--sky', 'Sky', (70, 130, 180)),
    Label('nature--snow', 'Snow', (190, 255, 255)),
    Label('nature--terrain', 'Terrain', (152, 251, 152)),
    Label('nature--vegetation', 'Vegetation', (107, 142, 35)),
    Label('nature--water', 'Water', (0, 170, 30)),
    Label('object--banner', 'Banner', (255, 255, 128)),
    Label('object--bench', 'Bench', (250, 0, 30)),
    Label('object--bike-rack', 'Bike Rack', (100, 140, 180)),
    Label('object--billboard', 'Billboard', (220, 220, 220)),
    Label('object--catch-basin', 'Catch Basin', (220, 128, 128)),
    Label('object--cctv-camera', 'CCTV Camera', (222, 40, 40)),
    Label('object--fire-hydrant', 'Fire Hydrant', (100, 170, 30)),
    Label('object--junction-box', 'Junction Box', (40, 40, 40)),
    Label('object--mailbox', 'Mailbox', (33, 33, 33)),
    Label('object--manhole', 'Manhole', (100, 128, 160)),
    Label('object--phone-booth', 'Phone Booth', (142, 0, 0)),
    Label('object--pothole', 'Pothole', (70, 100, 150)),
    Label('object--street-light', 'Street Light', (210, 170, 100)),
    Label('object--support--pole', 'Pole', (153, 153, 153)),
    Label('object--support--traffic-sign-frame', 'Traffic Sign Frame', (128, 128, 128)),
    Label('object--support--utility-pole', 'Utility Pole', (0, 0, 80)),
    Label('object--traffic-light', 'Traffic Light', (250, 170, 30)),
    Label('object--traffic-sign--back', 'Traffic Sign (Back)', (192, 192, 192)),
    Label('object--traffic-sign--front', 'Traffic Sign (Front)', (220, 220, 0)),
    Label('object--trash-can', 'Trash Can', (140, 140, 20)),
    Label('object--vehicle--bicycle', 'Bicycle', (119, 11, 32)),
    Label('object--vehicle--boat', 'Boat', (150, 0, 255)),
    Label('object--vehicle--bus', 'Bus', (0, 60, 100)),
    Label('object--vehicle--car', 'Car', (0, 0, 142)),
    Label('object--vehicle--caravan', 'Caravan', (0, 0, 90)),
    Label('object--vehicle--motorcycle', 'Motorcycle', (0, 0, 230)),
    Label('object--vehicle--on-rails', 'On Rails', (0, 80, 100)),
    Label('object--vehicle--other-vehicle', 'Other Vehicle', (128, 64, 64)),
    Label('object--vehicle--trailer', 'Trailer', (0, 0, 110)),
    Label('object--vehicle--truck', 'Truck', (0, 0, 70)),
    Label('object--vehicle--wheeled-slow', 'Wheeled Slow', (0, 0, 192)),
    Label('void--car-mount', 'Car Mount', (32, 32, 32)),
    Label('void--ego-vehicle', 'Ego Vehicle', (120, 10, 10)),
    Label('void--unlabeled', 'Unlabeled', (0, 0, 0)),
]

# v2.0: 124 labels; the last, 'void--unlabeled', is again the ignore id.
LABELS_V20 = [
    Label('animal--bird', 'Bird', (165, 42, 42)),
    Label('animal--ground-animal', 'Ground Animal', (0, 192, 0)),
    Label('construction--barrier--ambiguous', 'Ambiguous Barrier', (250, 170, 31)),
    Label('construction--barrier--concrete-block', 'Concrete Block', (250, 170, 32)),
    Label('construction--barrier--curb', 'Curb', (196, 196, 196)),
    Label('construction--barrier--fence', 'Fence', (190, 153, 153)),
    Label('construction--barrier--guard-rail', 'Guard Rail', (180, 165, 180)),
    Label('construction--barrier--other-barrier', 'Barrier', (90, 120, 150)),
    Label('construction--barrier--road-median', 'Road Median', (250, 170, 33)),
    Label('construction--barrier--road-side', 'Road Side', (250, 170, 34)),
    Label('construction--barrier--separator', 'Lane Separator', (128, 128, 128)),
    Label('construction--barrier--temporary', 'Temporary Barrier', (250, 170, 35)),
    Label('construction--barrier--wall', 'Wall', (102, 102, 156)),
    Label('construction--flat--bike-lane', 'Bike Lane', (128, 64, 255)),
    Label('construction--flat--crosswalk-plain', 'Crosswalk - Plain', (140, 140, 200)),
    Label('construction--flat--curb-cut', 'Curb Cut', (170, 170, 170)),
    Label('construction--flat--driveway', 'Driveway', (250, 170, 36)),
    Label('construction--flat--parking', 'Parking', (250, 170, 160)),
    Label('construction--flat--parking-aisle', 'Parking Aisle', (250, 170, 37)),
    Label('construction--flat--pedestrian-area', 'Pedestrian Area', (96, 96, 96)),
    Label('construction--flat--rail-track', 'Rail Track', (230, 150, 140)),
    Label('construction--flat--road', 'Road', (128, 64, 128)),
    Label('construction--flat--road-shoulder', 'Road Shoulder', (110, 110, 110)),
    Label('construction--flat--service-lane', 'Service Lane', (110, 110, 110)),
    Label('construction--flat--sidewalk', 'Sidewalk', (244, 35, 232)),
    Label('construction--flat--traffic-island', 'Traffic Island', (128, 196, 128)),
    Label('construction--structure--bridge', 'Bridge', (150, 100, 100)),
    Label('construction--structure--building', 'Building', (70, 70, 70)),
    Label('construction--structure--garage', 'Garage', (150, 150, 150)),
    Label('construction--structure--tunnel', 'Tunnel', (150, 120, 90)),
    Label('human--person--individual', 'Person', (220, 20, 60)),
    Label('human--person--person-group', 'Person Group', (220, 20, 60)),
    Label('human--rider--bicyclist', 'Bicyclist', (255, 0, 0)),
    Label('human--rider--motorcyclist', 'Motorcyclist', (255, 0, 100)),
    Label('human--rider--other-rider', 'Other Rider', (255, 0, 200)),
    Label('marking--continuous--dashed', 'Lane Marking - Dashed Line', (255, 255, 255)),
    Label('marking--continuous--solid', 'Lane Marking - Straight Line', (255, 255, 255)),
    Label('marking--continuous--zigzag', 'Lane Marking - Zigzag Line', (250, 170, 29)),
    Label('marking--discrete--ambiguous', 'Lane Marking - Ambiguous', (250, 170, 28)),
    Label('marking--discrete--arrow--left', 'Lane Marking - Arrow (Left)', (250, 170, 26)),
    Label('marking--discrete--arrow--other', 'Lane Marking - Arrow (Other)', (250, 170, 25)),
    Label('marking--discrete--arrow--right', 'Lane Marking - Arrow (Right)', (250, 170, 24)),
    Label('marking--discrete--arrow--split-left-or-straight',
          'Lane Marking - Arrow (Split Left or Straight)', (250, 170, 22)),
    Label('marking--discrete--arrow--split-right-or-straight',
          'Lane Marking - Arrow (Split Right or Straight)', (250, 170, 21)),
    Label('marking--discrete--arrow--straight', 'Lane Marking - Arrow (Straight)', (250, 170, 20)),
    Label('marking--discrete--crosswalk-zebra', 'Lane Marking - Crosswalk', (255, 255, 255)),
    Label('marking--discrete--give-way-row', 'Lane Marking - Give Way (Row)', (250, 170, 19)),
    Label('marking--discrete--give-way-single', 'Lane Marking - Give Way (Single)', (250, 170, 18)),
    Label('marking--discrete--hatched--chevron',
          'Lane Marking - Hatched (Chevron)', (250, 170, 12)),
    Label('marking--discrete--hatched--diagonal',
          'Lane Marking - Hatched (Diagonal)', (250, 170, 11)),
    Label('marking--discrete--other-marking', 'Lane Marking - Other', (255, 255, 255)),
    Label('marking--discrete--stop-line', 'Lane Marking - Stop Line', (255, 255, 255)),
    Label('marking--discrete--symbol--bicycle', 'Lane Marking - Symbol (Bicycle)', (250, 170, 16)),
    Label('marking--discrete--symbol--other', 'Lane Marking - Symbol (Other)', (250, 170, 15)),
    Label('marking--discrete--text', 'Lane Marking - Text', (250, 170, 15)),
    Label('marking-only--continuous--dashed', 'Lane Marking (only) - Dashed Line', (255, 255, 255)),
    Label('marking-only--discrete--crosswalk-zebra',
          'Lane Marking (only) - Crosswalk', (255, 255, 255)),
    Label('marking-only--discrete--other-marking', 'Lane Marking (only) - Other', (255, 255, 255)),
    Label('marking-only--discrete--text', 'Lane Marking (only) - Test', (255, 255, 255)),
    Label('nature--mountain', 'Mountain', (64, 170, 64)),
    Label('nature--sand', 'Sand', (230, 160, 50)),
    Label('nature--sky', 'Sky', (70, 130, 180)),
    Label('nature--snow', 'Snow', (190, 255, 255)),
    Label('nature--terrain', 'Terrain', (152, 251, 152)),
    Label('nature--vegetation', 'Vegetation', (107, 142, 35)),
    Label('nature--water', 'Water', (0, 170, 30)),
    Label('object--banner', 'Banner', (255, 255, 128)),
    Label('object--bench', 'Bench', (250, 0, 30)),
    Label('object--bike-rack', 'Bike Rack', (100, 140, 180)),
    Label('object--catch-basin', 'Catch Basin', (220, 128, 128)),
    Label('object--cctv-camera', 'CCTV Camera', (222, 40, 40)),
    Label('object--fire-hydrant', 'Fire Hydrant', (100, 170, 30)),
    Label('object--junction-box', 'Junction Box', (40, 40, 40)),
    Label('object--mailbox', 'Mailbox', (33, 33, 33)),
    Label('object--manhole', 'Manhole', (100, 128, 160)),
    Label('object--parking-meter', 'Parking Meter', (20, 20, 255)),
    Label('object--phone-booth', 'Phone Booth', (142, 0, 0)),
    Label('object--pothole', 'Pothole', (70, 100, 150)),
    Label('object--sign--advertisement', 'Signage - Advertisement', (250, 171, 30)),
    Label('object--sign--ambiguous', 'Signage - Ambiguous', (250, 172, 30)),
    Label('object--sign--back', 'Signage - Back', (250, 173, 30)),
    Label('object--sign--information', 'Signage - Information', (250, 174, 30)),
    Label('object--sign--other', 'Signage - Other', (250, 175, 30)),
    Label('object--sign--store', 'Signage - Store', (250, 176, 30)),
    Label('object--street-light', 'Street Light', (210, 170, 100)),
    Label('object--support--pole', 'Pole', (153, 153, 153)),
    Label('object--support--pole-group', 'Pole Group', (153, 153, 153)),
    Label('object--support--traffic-sign-frame', 'Traffic Sign Frame', (128, 128, 128)),
    Label('object--support--utility-pole', 'Utility Pole', (0, 0, 80)),
    Label('object--traffic-cone', 'Traffic Cone', (210, 60, 60)),
    Label('object--traffic-light--general-single',
          'Traffic Light - General (Single)', (250, 170, 30)),
    Label('object--traffic-light--pedestrians', 'Traffic Light - Pedestrians', (250, 170, 30)),
    Label('object--traffic-light--general-upright',
          'Traffic Light - General (Upright)', (250, 170, 30)),
    Label('object--traffic-light--general-horizontal',
          'Traffic Light - General (Horizontal)', (250, 170, 30)),
    Label('object--traffic-light--cyclists', 'Traffic Light - Cyclists', (250, 170, 30)),
    Label('object--traffic-light--other', 'Traffic Light - Other', (250, 170, 30)),
    Label('object--traffic-sign--ambiguous', 'Traffic Sign - Ambiguous', (192, 192, 192)),
    Label('object--traffic-sign--back', 'Traffic Sign (Back)', (192, 192, 192)),
    Label('object--traffic-sign--direction-back',
          'Traffic Sign - Direction (Back)', (192, 192, 192)),
    Label('object--traffic-sign--direction-front',
          'Traffic Sign - Direction (Front)', (220, 220, 0)),
    Label('object--traffic-sign--front', 'Traffic Sign (Front)', (220, 220, 0)),
    Label('object--traffic-sign--information-parking', 'Traffic Sign - Parking', (0, 0, 196)),
    Label('object--traffic-sign--temporary-back',
          'Traffic Sign - Temporary (Back)', (192, 192, 192)),
    Label('object--traffic-sign--temporary-front',
          'Traffic Sign - Temporary (Front)', (220, 220, 0)),
    Label('object--trash-can', 'Trash Can', (140, 140, 20)),
    Label('object--vehicle--bicycle', 'Bicycle', (119, 11, 32)),
    Label('object--vehicle--boat', 'Boat', (150, 0, 255)),
    Label('object--vehicle--bus', 'Bus', (0, 60, 100)),
    Label('object--vehicle--car', 'Car', (0, 0, 142)),
    Label('object--vehicle--caravan', 'Caravan', (0, 0, 90)),
    Label('object--vehicle--motorcycle', 'Motorcycle', (0, 0, 230)),
    Label('object--vehicle--on-rails', 'On Rails', (0, 80, 100)),
    Label('object--vehicle--other-vehicle', 'Other Vehicle', (128, 64, 64)),
    Label('object--vehicle--trailer', 'Trailer', (0, 0, 110)),
    Label('object--vehicle--truck', 'Truck', (0, 0, 70)),
    Label('object--vehicle--vehicle-group', 'Vehicle Group', (0, 0, 142)),
    Label('object--vehicle--wheeled-slow', 'Wheeled Slow', (0, 0, 192)),
    Label('object--water-valve', 'Water Valve', (170, 170, 170)),
    Label('void--car-mount', 'Car Mount', (32, 32, 32)),
    Label('void--dynamic', 'Dynamic', (111, 74, 0)),
    Label('void--ego-vehicle', 'Ego Vehicle', (120, 10, 10)),
    Label('void--ground', 'Ground', (81, 0, 81)),
    Label('void--static', 'Static', (111, 111, 0)),
    Label('void--unlabeled', 'Unlabeled', (0, 0, 0)),
]

UNLABELED = 'void--unlabeled'
# (label set name, table, config.json version, config file name in the v2.0 release)
VERSIONS = {'mapillary': (LABELS_V12, '1.2', 'config_v1.2.json'),
            'mapillary_v2': (LABELS_V20, '2.0', 'config_v2.0.json')}


def _label_set(name):
    """Every label its own class (training id = stored value), 'void--unlabeled' ignored.

    Values past the table (none in a valid label PNG) map to IGNORE_ID as well.
    """
    labels = [label for label in VERSIONS[name][0] if label.name != UNLABELED]
    table = np.full(256, IGNORE_ID, np.uint8)
    table[:len(labels)] = np.arange(len(labels))
    return LabelSet(name=name, class_names=[label.name for label in labels],
                    colors=np.array([label.color for label in labels], np.uint8),
                    id_to_train_id=table, train_id_to_id=None, categories=None,
                    known_values=np.arange(256) < len(VERSIONS[name][0]))  # void included


def config_file_names(label_set_name):
    """The names a dataset's label configuration may have, the version-specific one first."""
    return (VERSIONS[label_set_name][2], 'config.json')


def check_config(config, label_set_name, path):
    """Raises UserError unless a parsed config.json lists exactly this label set's table."""
    table, version, _ = VERSIONS[label_set_name]
    labels = config.get('labels') if isinstance(config, dict) else None
    if not isinstance(labels, list):
        raise UserError('%s has no "labels" list: not a Mapillary Vistas config.json' % path)
    found = [label.get('name') if isinstance(label, dict) else label for label in labels]
    expected = [label.name for label in table]
    if found == expected:
        return
    index = next((i for i, (a, b) in enumerate(zip(found, expected)) if a != b),
                 min(len(found), len(expected)))
    in_file, in_table = (names[index] if index < len(names) else '(none)'
                         for names in (found, expected))
    raise UserError('%s does not match the %s label table (Mapillary Vistas v%s): label %d is '
                    '%r there, %r in the table (%d labels in the file, %d in the table); use '
                    '--label_set mapillary (v1.2) or mapillary_v2' % (
                        path, label_set_name, version, index, in_file, in_table, len(found),
                        len(expected)))


LABEL_SETS = {name: functools.partial(_label_set, name) for name in VERSIONS}
