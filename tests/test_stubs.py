"""svdistill/_core.pyi against the compiled module it describes.

The stub is read where the package is (the source tree, or an installed wheel: which
must ship it). Names, kinds (class, function, property, static method, attribute),
base classes, and for each function and method its parameters (names, order, which
have defaults, the default values) must match what pybind11 reports in the first
line(s) of each ``__doc__``. The stub's own conventions (see its docstring):
pybind11's unnamed ``argN`` parameters are positional-only in the stub, under any
name; the core's ``in`` is ``in_``, positional-only; names starting with "_" are
typing helpers that the module does not have.
"""
from __future__ import annotations

import ast
import keyword
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

import svdistill
from svdistill import _core
from svdistill.distill.engine import STAT_KEYS

STUB = Path(svdistill.__file__).parent / "_core.pyi"

# A parameter: (name, positional-only, default as source text or None).
Param = Tuple[str, bool, Optional[str]]


# -- the module, as pybind11 describes it ---------------------------------------------

def _split_top(text: str) -> List[str]:
    """Splits at the commas outside brackets and quotes."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _parse_signature(line: str, name: str) -> List[Param]:
    """``name(a: T, b: U = 1) -> R`` as [(a, False, None), (b, False, "1")]."""
    m = re.match(rf"{re.escape(name)}\((.*)\) -> .*$", line)
    assert m, f"{name}: cannot read the signature pybind11 wrote: {line!r}"
    params = []
    for p in _split_top(m.group(1)):
        if p in ("*args", "**kwargs"):
            params.append((p, False, None))
            continue
        head, sep, default = p.partition(" = ")
        pname = head.split(":", 1)[0].strip()
        params.append((pname, False, default.strip() if sep else None))
    return params


def runtime_signatures(func, name: str, method: bool) -> List[List[Param]]:
    """One parameter list per overload, without ``self``."""
    doc = (func.__doc__ or "").splitlines()
    assert doc, f"{name}: no __doc__ to read the signature from"
    if len(doc) > 1 and doc[1].strip() == "Overloaded function.":
        lines = [re.sub(r"^\d+\. ", "", ln) for ln in doc if re.match(r"^\d+\. " + re.escape(name) + r"\(", ln)]
    else:
        lines = [doc[0]]
    sigs = [_parse_signature(ln, name) for ln in lines]
    return [s[1:] if method else s for s in sigs]


def _member_kind(obj) -> str:
    if isinstance(obj, property):
        return "property"
    if isinstance(obj, staticmethod):
        return "staticmethod"
    if isinstance(obj, classmethod):
        return "classmethod"
    if callable(obj):
        return "method"
    return "attribute"


def _runtime_members(cls) -> Dict[str, object]:
    out = {}
    for n, v in vars(cls).items():
        if n == "__init__" and type(v).__name__ == "instancemethod":  # a pybind11 constructor
            out[n] = v
        elif not n.startswith("_"):
            out[n] = v
    return out


def _is_exception(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, BaseException)


# -- the stub -------------------------------------------------------------------------

def _decorators(fn: ast.FunctionDef) -> List[str]:
    return [ast.unparse(d) for d in fn.decorator_list]


def _stub_params(fn: ast.FunctionDef, method: bool) -> List[Param]:
    a = fn.args
    positional = [(x, True) for x in a.posonlyargs] + [(x, False) for x in a.args]
    defaults: List[Optional[ast.expr]] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params: List[Param] = [(x.arg, po, None if d is None else ast.unparse(d))
                           for (x, po), d in zip(positional, defaults)]
    if method and "staticmethod" not in _decorators(fn):
        params = params[1:]
    if a.vararg:
        params.append(("*args", False, None))
    for x, d in zip(a.kwonlyargs, a.kw_defaults):
        params.append((x.arg, False, None if d is None else ast.unparse(d)))
    if a.kwarg:
        params.append(("**kwargs", False, None))
    return params


def _stub_kind(defs: List[ast.stmt]) -> str:
    first = defs[0]
    if isinstance(first, ast.ClassDef):
        return "class"
    if isinstance(first, (ast.AnnAssign, ast.Assign)):
        return "attribute"
    decos = _decorators(first)  # type: ignore[arg-type]
    for k in ("property", "staticmethod", "classmethod"):
        if k in decos:
            return k
    return "method"


def _stub_members(body: List[ast.stmt]) -> Dict[str, List[ast.stmt]]:
    """Name -> its definitions (several for @overload, a property and its setter)."""
    out: Dict[str, List[ast.stmt]] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.setdefault(node.name, []).append(node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.setdefault(node.target.id, []).append(node)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out.setdefault(t.id, []).append(node)
    return out


# -- the comparison -------------------------------------------------------------------

def _same_default(stub: str, runtime: str) -> bool:
    try:
        a, b = ast.literal_eval(stub), ast.literal_eval(runtime)
    except ValueError:
        return stub == runtime
    if isinstance(a, float) or isinstance(b, float):
        # pybind11 prints a C++ float default widened to double (0.008f: 0.00800000037997961).
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            math.isclose(a, b, rel_tol=1e-6)
    return type(a) is type(b) and a == b


def compare_params(where: str, stub: List[Param], runtime: List[Param]) -> List[str]:
    problems = []
    show = lambda ps: "(" + ", ".join(n + ("" if d is None else f"={d}") for n, _, d in ps) + ")"  # noqa: E731
    if len(stub) != len(runtime):
        return [f"{where}: the stub has {len(stub)} parameters {show(stub)}, "
                f"the module {len(runtime)} {show(runtime)}"]
    keyword_at = [i for i, (n, _, _) in enumerate(runtime) if keyword.iskeyword(n)]
    for i, ((sn, spo, sd), (rn, _, rd)) in enumerate(zip(stub, runtime)):
        unnamed = re.fullmatch(r"arg\d+", rn) is not None
        if unnamed:
            if not spo:
                problems.append(f"{where}: parameter {i + 1} ({sn}) has no name in the module (pybind11's "
                                f"{rn}: positional only); the stub must put it before '/'")
        elif keyword.iskeyword(rn):
            if sn != rn + "_" or not spo:
                problems.append(f"{where}: parameter {i + 1} is {rn!r} in the module, a Python keyword: the "
                                f"stub must call it {rn + '_'!r}, positional only; it has {sn!r}")
        else:
            if sn != rn:
                problems.append(f"{where}: parameter {i + 1} is {rn!r} in the module, {sn!r} in the stub")
            if spo and not any(k > i for k in keyword_at):
                problems.append(f"{where}: parameter {rn!r} can be passed by keyword, the stub makes it "
                                f"positional only")
        if (sd is None) != (rd is None):
            problems.append(f"{where}: parameter {rn!r} has " + (f"default {rd} in the module and none in the stub"
                            if sd is None else f"no default in the module and {sd} in the stub"))
        elif sd is not None and rd is not None and not _same_default(sd, rd):
            problems.append(f"{where}: parameter {rn!r}: default {rd} in the module, {sd} in the stub")
    return problems


def _compare_function(where: str, defs: List[ast.stmt], obj, method: bool) -> List[str]:
    name = where.rsplit(".", 1)[-1]
    fns = [d for d in defs if isinstance(d, ast.FunctionDef)]
    overloads = [f for f in fns if "overload" in _decorators(f)]
    stub_sigs = [_stub_params(f, method) for f in (overloads or fns[:1])]
    rt_sigs = runtime_signatures(obj, name, method)
    if len(stub_sigs) != len(rt_sigs):
        return [f"{where}: {len(rt_sigs)} overload(s) in the module, {len(stub_sigs)} in the stub"]
    problems = []
    for i, (s, r) in enumerate(zip(stub_sigs, rt_sigs)):
        problems += compare_params(where if len(rt_sigs) == 1 else f"{where} (overload {i + 1})", s, r)
    return problems


def _name_diff(where: str, runtime: set, stub: set) -> List[str]:
    problems = []
    if runtime - stub:
        problems.append(f"{where}: in the module, not in the stub: {sorted(runtime - stub)}")
    if stub - runtime:
        problems.append(f"{where}: in the stub, not in the module: {sorted(stub - runtime)}")
    return problems


def _compare_class(name: str, node: ast.ClassDef, cls) -> List[str]:
    problems = []
    rt_bases = sorted(b.__name__ for b in cls.__bases__ if b.__name__ not in ("object", "pybind11_object"))
    stub_bases = sorted(ast.unparse(b) for b in node.bases)
    if rt_bases != stub_bases:
        problems.append(f"{name}: bases {rt_bases} in the module, {stub_bases} in the stub")
    if _is_exception(cls):  # attributes are set on the instance: see test_format_error_attributes
        return problems
    rt = _runtime_members(cls)
    st = {n: d for n, d in _stub_members(node.body).items() if not n.startswith("_") or n == "__init__"}
    problems += _name_diff(name, set(rt), set(st))
    for m in sorted(set(rt) & set(st)):
        where, kind, skind = f"{name}.{m}", _member_kind(rt[m]), _stub_kind(st[m])
        if kind != skind:
            problems.append(f"{where}: a {kind} in the module, a {skind} in the stub")
            continue
        if kind == "property":
            setter = any(f"{m}.setter" in _decorators(d) for d in st[m] if isinstance(d, ast.FunctionDef))
            if (rt[m].fset is not None) != setter:
                problems.append(f"{where}: " + ("settable in the module, read-only in the stub" if not setter
                                                else "read-only in the module, settable in the stub"))
        elif kind in ("method", "staticmethod", "classmethod"):
            fn = getattr(cls, m)
            problems += _compare_function(where, st[m], fn, method=kind != "staticmethod")
    return problems


def compare(stub_source: str, module) -> List[str]:
    """Every difference between the stub's text and the module, as sentences."""
    tree = ast.parse(stub_source)
    st = {n: d for n, d in _stub_members(tree.body).items() if not n.startswith("_")}
    rt = {n: getattr(module, n) for n in dir(module) if not n.startswith("_")}
    problems = _name_diff(module.__name__, set(rt), set(st))
    for name in sorted(set(rt) & set(st)):
        obj, kind = rt[name], _stub_kind(st[name])
        if isinstance(obj, type):
            if kind != "class":
                problems.append(f"{name}: a class in the module, a {kind} in the stub")
            else:
                problems += _compare_class(name, st[name][0], obj)  # type: ignore[arg-type]
        elif callable(obj):
            if kind != "method":
                problems.append(f"{name}: a function in the module, a {kind} in the stub")
            else:
                problems += _compare_function(name, st[name], obj, method=False)
        else:
            node = st[name][0]
            ann = ast.unparse(node.annotation) if isinstance(node, ast.AnnAssign) else None
            if kind != "attribute" or ann != type(obj).__name__:
                problems.append(f"{name}: a {type(obj).__name__} in the module, {ann or kind} in the stub")
    return problems


# -- tests ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stub_source() -> str:
    assert STUB.is_file(), f"{STUB} is missing: the package must ship the stub of its compiled core"
    return STUB.read_text(encoding="utf-8")


def test_stub_matches_module(stub_source):
    problems = compare(stub_source, _core)
    assert not problems, "svdistill/_core.pyi does not match svdistill._core:\n  " + "\n  ".join(problems)


def test_comparison_sees_a_missing_function(stub_source):
    cut = re.sub(r"^def blas_core\(.*\n", "", stub_source, flags=re.M)
    assert cut != stub_source
    problems = compare(cut, _core)
    assert any("in the module, not in the stub: ['blas_core']" in p for p in problems), problems
    extra = stub_source + "\ndef no_such_function() -> None: ...\n"
    assert any("in the stub, not in the module: ['no_such_function']" in p for p in compare(extra, _core))


def test_comparison_sees_renamed_and_reordered_parameters(stub_source):
    renamed = stub_source.replace("def output_target(path: str)", "def output_target(target: str)")
    assert renamed != stub_source
    assert "output_target: parameter 1 is 'path' in the module, 'target' in the stub" in compare(renamed, _core)
    swapped = stub_source.replace("def remove_stale_temporaries(folder: str, start: str)",
                                  "def remove_stale_temporaries(start: str, folder: str)")
    assert len([p for p in compare(swapped, _core) if p.startswith("remove_stale_temporaries")]) == 2
    # in a method, in an overload
    ctor = stub_source.replace("path: str, skip_data: bool = False", "path: str, skip: bool = False")
    assert "Reader.__init__ (overload 1): parameter 2 is 'skip_data' in the module, 'skip' in the stub" in \
        compare(ctor, _core)


def test_comparison_sees_defaults_kinds_and_keywords(stub_source):
    def problems_for(old: str, new: str) -> List[str]:
        changed = stub_source.replace(old, new)
        assert changed != stub_source, old
        return compare(changed, _core)

    assert any("'upto': default -1 in the module, -2 in the stub" in p
               for p in problems_for("upto: int = -1", "upto: int = -2"))
    assert any("'total_energy' has default -1.0 in the module and none in the stub" in p
               for p in problems_for("total_energy: float = -1.0", "total_energy: float"))
    assert any("Component.copy: a method in the module, a property in the stub" in p
               for p in problems_for("    def copy(self)", "    @property\n    def copy(self)"))
    assert any("positional only" in p and "'in'" in p
               for p in problems_for("def round_rank(k: int, multiple: int, out: int, in_: int, /)",
                                     "def round_rank(k: int, multiple: int, out: int, inp: int, /)"))
    assert any("no name in the module" in p
               for p in problems_for("def kind_of_marker(marker: str, /)", "def kind_of_marker(marker: str)"))
    assert any("FormatError: bases ['Error'] in the module, ['Exception'] in the stub" in p
               for p in problems_for("class FormatError(Error):", "class FormatError(Exception):"))


def test_signature_reader():
    assert _parse_signature("f(a: dict[str, int], b: str = 'x, y', c: float = 1.0) -> None", "f") == [
        ("a", False, None), ("b", False, "'x, y'"), ("c", False, "1.0")]
    assert _same_default("0.008", "0.00800000037997961")
    assert not _same_default("0.009", "0.00800000037997961")
    assert not _same_default("False", "0")


def _typed_dict(stub_source: str, name: str) -> Dict[str, str]:
    tree = ast.parse(stub_source)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    return {s.target.id: ast.unparse(s.annotation) for s in node.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}


_CHECKS = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
           "float": lambda v: isinstance(v, float), "bool": lambda v: isinstance(v, bool),
           "str": lambda v: isinstance(v, str),
           "Optional[str]": lambda v: v is None or isinstance(v, str),
           "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}


def _check_dict(stub_source: str, typed_dict: str, value: dict) -> None:
    want = _typed_dict(stub_source, typed_dict)
    assert sorted(value) == sorted(want), f"{typed_dict}: keys {sorted(want)} in the stub, {sorted(value)} returned"
    wrong = {k: (want[k], type(v).__name__) for k, v in value.items() if not _CHECKS[want[k]](v)}
    assert not wrong, f"{typed_dict}: (stub type, returned type) differ for {wrong}"


_COUNTS = ("frames", "agree", "blocks", "correct", "labelled")


def test_returned_dicts_match_their_typed_dicts(stub_source):
    _check_dict(stub_source, "_BuildInfo", _core.build_info())
    student = [_core.make_affine(3, 4), _core.make_simple("Softmax", 3)]
    teacher = _core.Network([c.copy() for c in student])
    trainer = _core.Trainer(student, [teacher])
    x = np.zeros((2, 4), np.float32)
    loss = _core.LossOptions()
    for stats in (trainer.evaluate(x, None, loss),
                  trainer.train(x, np.array([0, -1], np.int32), _core.OptimizerOptions(), loss),
                  trainer.gradients(x, None, loss)[2]):
        assert sorted(stats) == sorted(STAT_KEYS)
        assert all(isinstance(v, int if k in _COUNTS else float) for k, v in stats.items()), stats
    assert trainer.slots
    for slot in trainer.slots:
        _check_dict(stub_source, "_Slot", slot)


def test_returned_arrays_match_the_stub():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    for result in (_core.truncated_svd(a, 2, "exact"), _core.adaptive_energy_svd(a, 0.9)):
        u, s, vt, total, sketch, route = result
        assert (u.dtype, s.dtype, vt.dtype) == (np.float32, np.float64, np.float32)
        assert isinstance(total, float) and isinstance(sketch, int) and isinstance(route, str)
    assert _core.singular_values(a).dtype == np.float64
    comp = _core.make_affine(2, 3)
    assert comp.param(0).dtype == np.float32 and comp.ints is None and comp.raw is None
    target, tmp, fd = _core.prepare_output("/dev/null")
    assert (target, tmp, fd) == ("/dev/null", None, -1)


def test_format_error_attributes(stub_source, tmp_path):
    bad = tmp_path / "bad.nnet"
    bad.write_text("<Nnet>\n<AffineTransform> 3 4\n<LearnRateCoef> x\n")
    with pytest.raises(_core.FormatError) as info:
        _core.Reader(str(bad)).next()
    want = _typed_dict(stub_source, "FormatError")
    got = vars(info.value)
    assert sorted(got) == sorted(want)
    assert isinstance(got["file"], str) and isinstance(got["offset"], int)
    assert all(got[k] is None or isinstance(got[k], int) for k in ("line", "column", "component_index"))
    assert got["marker"] is None or isinstance(got["marker"], str)
