"""The deployment side's layering, read from the sources: model folders import no package
module, deployment imports neither training nor the applications, and no module of these
layers imports the project inside a function or uses another module's private names."""
import ast
import glob
import os

import pytest

TOOL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_LEVEL = {'main', 'fcn8vgg16', 'cityscape_labels', 'mapillary_labels', 'data_loader', 'helper',
             'benchmark', 'roadseg'}
# (sources, package prefixes they must not import)
LAYERS = [('roadseg/model_dir.py', ('roadseg.',)),
          ('roadseg/deploy/*.py', ('roadseg.training', 'roadseg.apps')),
          ('roadseg/apps/*.py', ('roadseg.training',)),
          ('roadseg/data/*.py', ('roadseg.training', 'roadseg.deploy', 'roadseg.apps'))]
CHECKED = ['helper.py', 'data_loader.py', 'roadseg/model_dir.py', 'roadseg/deploy/*.py',
           'roadseg/apps/*.py', 'roadseg/data/*.py']


def _sources(patterns):
    return sorted(path for pattern in patterns
                  for path in glob.glob(os.path.join(TOOL_DIR, pattern)))


def _imports(tree):
    """(module imported, line, inside a function?) of every project import in tree."""
    found = []
    functions = [node for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(inner) for function in functions for inner in ast.walk(function)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module + '.' + alias.name for alias in node.names]
        else:
            continue
        found += [(name, node.lineno, id(node) in nested) for name in names
                  if name.split('.')[0] in TOP_LEVEL]
    return found


def _tree(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


@pytest.mark.parametrize('pattern, forbidden', LAYERS)
def test_each_layer_imports_only_below_itself(pattern, forbidden):
    wrong = ['%s:%d imports %s' % (os.path.relpath(path, TOOL_DIR), line, name)
             for path in _sources([pattern])
             for name, line, _ in _imports(_tree(path)) if name.startswith(forbidden)]
    assert wrong == []


def test_no_project_import_hides_inside_a_function():
    hidden = ['%s:%d imports %s' % (os.path.relpath(path, TOOL_DIR), line, name)
              for path in _sources(CHECKED)
              for name, line, in_function in _imports(_tree(path)) if in_function]
    assert hidden == []


def test_no_module_uses_another_modules_private_names():
    used = []
    for path in _sources(CHECKED):
        tree = _tree(path)
        modules = {alias.asname or alias.name.split('.')[-1]
                   for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names
                   if (getattr(node, 'module', None) or alias.name).split('.')[0] in TOP_LEVEL}
        used += ['%s:%d %s.%s' % (os.path.relpath(path, TOOL_DIR), node.lineno,
                                  node.value.id, node.attr)
                 for node in ast.walk(tree)
                 if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                 and node.value.id in modules and node.attr.startswith('_')
                 and not node.attr.startswith('__')]
    assert used == []
