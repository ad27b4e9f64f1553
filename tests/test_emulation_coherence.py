"""Audit: every access of the kernels to a buffer other CTAs write in the same launch goes
through CrossCta (csrc/persistent.cuh), whose only read is the L2-coherent ``__ldcg``.

L1 is not coherent across SMs: a plain load of h / m / dh / dg / direct written by another
CTA before the grid barrier may return a stale line on a GPU, and no CPU emulation can show
it. So the buffers are a type with no raw pointer, and this test checks statically that the
params.h fields marked ``[cross-CTA]`` never reach the device code (csrc/*.cu, csrc/*.cuh)
except as the argument of a CrossCta constructor. .ci/sanitize_emulation.sh checks the same
property dynamically (its ThreadSanitizer "coherence" build).
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"


def _strip_comments(code: str) -> str:
    """C++ source without // and /* */ comments, line breaks kept (for line numbers)."""
    code = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def cross_cta_fields(params_h: str) -> list[str]:
    """The RecurrentParams fields whose comment starts with [cross-CTA]."""
    return re.findall(r"void\*\s+(\w+);\s*//\s*\[cross-CTA\]", params_h)


def device_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(CSRC.glob("*.cu")) + sorted(CSRC.glob("*.cuh"))}


def audit(sources: dict[str, str], fields: list[str]) -> list[str]:
    """Problems found: a cross-CTA field used outside ``CrossCta<...>(x.field)``, a __ldcg
    outside CrossCta, or a CrossCta member that hands out its pointer."""
    problems = []
    use = re.compile(r"(?:\.|->)\s*(" + "|".join(fields) + r")\b")
    wrapped = re.compile(r"CrossCta<\s*\w+\s*>\s*\(\s*\w+\s*$")
    for name, text in sources.items():
        code = _strip_comments(text)
        for m in use.finditer(code):
            if not wrapped.search(code[:m.start()]):
                line = code.count("\n", 0, m.start()) + 1
                problems.append(f"{name}:{line}: {m.group(1)} used outside CrossCta")
        body = re.search(r"class CrossCta\s*\{(.*?)\n\};", code, flags=re.S)
        outside = code if body is None else code[:body.start()] + code[body.end():]
        for m in re.finditer(r"\b__ldcg\b", outside):
            line = code.count("\n", 0, m.start()) + 1
            problems.append(f"{name}:{line}: __ldcg outside CrossCta (cross-CTA reads go "
                            "through CrossCta::load)")
        if body is not None:
            members = body.group(1)
            if re.search(r"\bA\s*\*\s*(?!p_\b)\w+\s*\(", members) or "operator A" in members:
                problems.append(f"{name}: CrossCta exposes its raw pointer")
            if "__ldcg(p_" not in members:
                problems.append(f"{name}: CrossCta::load does not read through __ldcg")
    return problems


def test_params_h_marks_the_exchanged_buffers():
    fields = cross_cta_fields((CSRC / "params.h").read_text())
    assert set(fields) == {"h_state", "m_buf", "dh_state", "dg_buf", "direct_buf"}, fields


def test_cross_cta_buffers_are_read_only_through_ldcg():
    sources = device_sources()
    assert "class CrossCta" in sources["persistent.cuh"]
    problems = audit(sources, cross_cta_fields((CSRC / "params.h").read_text()))
    assert not problems, "\n".join(problems)


def test_audit_finds_a_plain_read_and_a_stray_ldcg():
    """The audit is not vacuous: a plain read of h and a __ldcg of dg outside CrossCta."""
    fields = cross_cta_fields((CSRC / "params.h").read_text())
    sources = device_sources()
    planted = dict(sources)
    planted["recurrent_fwd.cu"] = sources["recurrent_fwd.cu"] + (
        "\nfloat stale(const RecurrentParams& p) { return static_cast<const float*>(p.h_state)[0]; }\n")
    planted["recurrent_bwd.cu"] = sources["recurrent_bwd.cu"] + (
        "\nfloat stray(const float* dg) { return __ldcg(dg); }\n")
    problems = audit(planted, fields)
    assert any("recurrent_fwd.cu" in p and "h_state used outside CrossCta" in p
               for p in problems), problems
    assert any("recurrent_bwd.cu" in p and "__ldcg outside CrossCta" in p for p in problems), problems
