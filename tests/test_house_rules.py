"""The shape of the code, read from the sources: imports go one way (from main.py down to the
network and the label tables), no module uses another's private names, no project import hides
inside a function, deployment never imports training, and files and functions stay short."""
import ast
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_LINE_CHARS = 100
# Layers, highest first: a module imports only from layers below its own, or its own folder.
# deploy and training are side by side: neither imports the other.
LAYERS = (
    ('main',),
    ('roadseg.flags',),
    ('roadseg.apps',),
    ('roadseg.training', 'roadseg.deploy', 'roadseg.data'),
    ('roadseg.specs', 'roadseg.model_dir'),
    ('roadseg.devices',),
    ('data_loader',),
    ('fcn8vgg16',),
    ('roadseg.fc_products',),
    ('mapillary_labels',),
    ('roadseg.table_files', 'roadseg.file_pairs', 'roadseg.photometric'),
    ('helper', 'cityscape_labels', 'roadseg.tf_runtime'),
)


def _product_files():
    """Every Python file of the tool (not the tests) by its module name."""
    paths = glob.glob(os.path.join(REPO, '*.py')) + glob.glob(
        os.path.join(REPO, 'roadseg', '**', '*.py'), recursive=True) + glob.glob(
        os.path.join(REPO, 'benchmark', '**', '*.py'), recursive=True)
    modules = {}
    for path in sorted(paths):
        name = os.path.relpath(path, REPO)[:-len('.py')].replace(os.sep, '.')
        modules[name[:-len('.__init__')] if name.endswith('.__init__') else name] = path
    return modules


MODULES = _product_files()


def _project_module(name):
    """The project module an import names, or None for another package's."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition('.')[0]
    return None


def _imports(tree):
    """(line, module, names, inside a function) of every import of a project module."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    module = _project_module(alias.name)
                    if module:
                        found.append((child.lineno, module, [], in_function))
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    module = _project_module('%s.%s' % (child.module, alias.name))
                    if module:
                        found.append((child.lineno, module, [alias.name], in_function))
            visit(child, nested)
    visit(tree, False)
    return found


def _layer(module):
    for index, layer in enumerate(LAYERS):
        if any(module == part or module.startswith(part + '.') for part in layer):
            return index, next(part for part in layer
                               if module == part or module.startswith(part + '.'))
    return None, None


def _trees():
    return {name: ast.parse(open(path).read(), path) for name, path in MODULES.items()}


def test_every_module_of_the_tool_has_a_layer():
    assert [name for name in MODULES
            if _layer(name)[0] is None and not name.startswith('benchmark')
            and name != 'roadseg'] == []


def import_violations(trees):
    """Imports of a layer above or beside a module's own, and project imports inside a
    function (main.py's per-action imports excepted)."""
    wrong = []
    for name, tree in trees.items():
        layer, part = _layer(name)
        for line, module, _, in_function in _imports(tree):
            target, target_part = _layer(module)
            where = '%s:%d imports %s' % (name, line, module)
            if in_function and name != 'main':
                wrong.append(where + ' inside a function')
            if layer is None or module == name:
                continue
            if target is None or target < layer or (target == layer and target_part != part):
                wrong.append(where + ', which is not below it')
    return wrong


def private_name_uses(trees):
    """Uses of another project module's _names: `from m import _x` and `m._x`."""
    wrong = []
    for name, tree in trees.items():
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update(alias.asname or alias.name for alias in node.names
                               if _project_module(alias.name))
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if alias.name.startswith('_') and _project_module(node.module):
                        wrong.append('%s:%d imports %s.%s' % (name, node.lineno, node.module,
                                                              alias.name))
                    elif _project_module('%s.%s' % (node.module, alias.name)):
                        aliases.add(alias.asname or alias.name)
        wrong.extend('%s:%d uses %s.%s' % (name, node.lineno, node.value.id, node.attr)
                     for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and node.attr.startswith('_')
                     and not node.attr.startswith('__') and isinstance(node.value, ast.Name)
                     and node.value.id in aliases)
    return wrong


def test_imports_go_one_way_and_never_from_inside_a_function():
    assert import_violations(_trees()) == []


def test_no_module_uses_another_modules_private_names():
    assert private_name_uses(_trees()) == []


def test_no_import_cycles():
    graph = {name: {module for _, module, _, _ in _imports(tree) if module != name}
             for name, tree in _trees().items()}
    state = {}

    def visit(name, path):
        if state.get(name) == 'open':
            pytest.fail('import cycle: %s' % ' -> '.join(path[path.index(name):] + [name]))
        if state.get(name) == 'done':
            return
        state[name] = 'open'
        for module in sorted(graph.get(name, ())):
            visit(module, path + [name])
        state[name] = 'done'

    for name in sorted(graph):
        visit(name, [])


def test_files_and_functions_stay_short():
    long = []
    for name, path in MODULES.items():
        lines = open(path).read().count('\n')
        if lines > MAX_FILE_LINES:
            long.append('%s: %d lines' % (os.path.relpath(path, REPO), lines))
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append('%s:%d %s: %d lines' % (os.path.relpath(path, REPO),
                                                        node.lineno, node.name, length))
    assert long == []


def test_lines_of_the_tool_and_its_tests_stay_within_100_characters():
    paths = list(MODULES.values()) + sorted(glob.glob(os.path.join(REPO, 'tests', '*.py')))
    long = []
    for path in paths:
        for number, line in enumerate(open(path).read().split('\n'), 1):
            if len(line) > MAX_LINE_CHARS:
                long.append('%s:%d: %d characters' % (os.path.relpath(path, REPO), number,
                                                      len(line)))
    assert long == []


def test_the_rules_catch_what_they_are_for():
    """Each check names the line of a crafted breach of its rule."""
    trees = {
        'roadseg.deploy.export': ast.parse('from roadseg.training import trainer\n'),
        'fcn8vgg16': ast.parse('import data_loader\n'),
        'data_loader': ast.parse('import helper\n\ndef f():\n    import fcn8vgg16\n'
                                 '    return helper._x\n'),
        'main': ast.parse('def train():\n    from roadseg.training import trainer\n'),
    }
    assert import_violations(trees) == [
        'roadseg.deploy.export:1 imports roadseg.training.trainer, which is not below it',
        'fcn8vgg16:1 imports data_loader, which is not below it',
        'data_loader:4 imports fcn8vgg16 inside a function']
    assert private_name_uses(trees) == ['data_loader:5 uses helper._x']
