"""The fast suite (`python -m pytest -q -m "not end_to_end" tests`) builds fresh tiny graphs in
this process and nothing more: a test that runs the tool's command line (main.main, the
benchmark's), starts a process or uses a fixture that does, is marked end_to_end. Read from
the test sources, so that a new test cannot slip a training run into the fast suite."""
import ast
import glob
import os
import re

TESTS = os.path.dirname(os.path.abspath(__file__))
MARKER = 'end_to_end'
# What makes a function end-to-end: the command line, a process, a row of the benchmark.
HEAVY = re.compile(r'\b(main\.main|cli\.main|subprocess\.|multiprocessing\.|child_reply|'
                   r'in_child|tiny_main)')


def _marked(decorators):
    return any(MARKER in ast.unparse(decorator) for decorator in decorators)


def _functions(tree):
    """Every function and class of a module, methods too, by name (a later one of a name
    wins)."""
    return {node.name: node for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def _is_fixture(function):
    return any('fixture' in ast.unparse(decorator) for decorator in function.decorator_list)


def _heavy_names(functions, heavy_fixtures):
    """Names of the functions that run something end-to-end, directly, through another
    function of theirs or through a fixture they take."""
    heavy = set()
    changed = True
    while changed:
        changed = False
        for name, function in functions.items():
            if name in heavy:
                continue
            references = {ast.unparse(node) for node in ast.walk(function)
                          if isinstance(node, (ast.Attribute, ast.Name))}
            arguments = function.args.args if hasattr(function, 'args') else []
            fixtures = {arg.arg for arg in arguments} & (
                heavy_fixtures | {n for n in heavy if _is_fixture(functions[n])})
            if any(HEAVY.search(text) for text in references) or references & (
                    heavy - {name}) or fixtures:
                heavy.add(name)
                changed = True
    return heavy


def unmarked_end_to_end_tests(sources):
    """'file:line test' of each test that runs something end-to-end and is not marked.
    sources: {file name: source}; conftest.py's heavy fixtures count in every file."""
    trees = {name: ast.parse(source) for name, source in sources.items()}
    conftest = _functions(trees.get('conftest.py', ast.parse('')))
    shared = {name for name in _heavy_names(conftest, set()) if _is_fixture(conftest[name])}
    wrong = []
    for file_name, tree in sorted(trees.items()):
        module_marked = any(
            isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == 'pytestmark'
                for target in node.targets) and MARKER in ast.unparse(node.value)
            for node in tree.body)
        functions = _functions(tree)
        heavy = _heavy_names(functions, shared)
        wrong.extend('%s:%d %s' % (file_name, function.lineno, name)
                     for name, function in sorted(functions.items())
                     if name.startswith('test_') and name in heavy and not module_marked
                     and not _marked(function.decorator_list))
    return wrong


def _test_sources():
    paths = glob.glob(os.path.join(TESTS, 'test_*.py')) + [os.path.join(TESTS, 'conftest.py')]
    return {os.path.basename(path): open(path).read() for path in paths}


def test_every_end_to_end_test_is_marked():
    assert unmarked_end_to_end_tests(_test_sources()) == []


def test_the_check_finds_what_it_is_for():
    sources = {
        'conftest.py': ('import pytest\n@pytest.fixture\ndef trained():\n'
                        '    return main.main([])\n'),
        'test_a.py': ('def _spawn():\n    subprocess.run([])\n'
                      'def test_spawns():\n    _spawn()\n'
                      'def test_takes_a_trained_model(trained):\n    pass\n'
                      'class _Cluster:\n    def start(self):\n        subprocess.Popen([])\n'
                      'def test_cluster():\n    _Cluster().start()\n'
                      '@pytest.mark.end_to_end\ndef test_marked():\n    main.main([])\n'
                      'def test_graph_only():\n    return 1\n'),
        'test_b.py': 'pytestmark = pytest.mark.end_to_end\ndef test_cli():\n    main.main([])\n',
    }
    assert unmarked_end_to_end_tests(sources) == [
        'test_a.py:10 test_cluster', 'test_a.py:3 test_spawns',
        'test_a.py:5 test_takes_a_trained_model']
