"""Markdown tables of the evaluation report, rendered from its JSON dict."""

from __future__ import annotations

from pathlib import Path

from salt.evaluation.metrics import TRACK_ORIGINS


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render_markdown(report: dict) -> str:
    """Markdown tables of a report dict (as in `<stem>__report.json`)."""
    models = report["models"]
    several = len(models) > 1
    lines = [f"# Evaluation report{': ' + report['sample'] if report['sample'] else ''}", ""]
    lines += ["| model | tagger | jets | b | c | light | tau | file |", "|---" * 8 + "|"]
    for m in models:
        n = m["n_jets"]
        lines.append(
            f"| {m['label']} | {m['tagger']} | {n['total']} | {n['bjets']} | {n['cjets']} "
            f"| {n['ujets']} | {n['taujets']} | `{Path(m['file']).name}` |"
        )
    lines.append("")
    for m in models:
        for note in m["notes"]:
            lines.append(f"- {m['label']}: {note}")
    if any(m["notes"] for m in models):
        lines.append("")

    fr = models[0]["fractions"]
    lines += [
        "## b-tagging working points",
        "",
        f"D_b = log(p_b / (f_c p_c + f_tau p_tau + f_u p_u)) with f_c = {fr['fc']:g}, "
        f"f_tau = {fr['ftau']:g}, f_u = {fr['fu']:g}; cut at the b-jet quantile of each model.",
        "",
    ]
    head = ["model", "b-eff", "cut", "light rej.", "c rej."]
    if several:
        head += [f"light / {report['reference']}", f"c / {report['reference']}"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    ref = models[0]["working_points"]
    for m in models:
        for wp, wp_ref in zip(m["working_points"], ref):
            row = [m["label"], f"{wp['b_eff']:.0%}", _fmt(wp["cut"], 3)]
            for key, flav, digits in (("light_rej", "ujets", 1), ("c_rej", "cjets", 2)):
                n_bkg = m["n_jets"][flav]
                # No background jet passes the cut: the rejection is only bounded.
                bound = f"> {n_bkg}" if n_bkg and wp.get(key) is None else None
                row.append(bound or _fmt(wp.get(key), digits))
            if several:
                for key in ("light_rej", "c_rej"):
                    a, b = wp.get(key), wp_ref.get(key)
                    row.append(_fmt(a / b, 3) if a is not None and b else "n/a")
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    with_origin = [m for m in models if m["track_origin"] is not None]
    if with_origin:
        lines += [
            "## Track origin",
            "",
            "Efficiency per truth class (diagonal of the "
            "row-normalised confusion matrix) over valid tracks.",
            "",
        ]
        lines += ["| class | " + " | ".join(m["label"] for m in with_origin) + " |"]
        lines.append("|---" * (len(with_origin) + 1) + "|")
        for c in TRACK_ORIGINS:
            effs = [_fmt(m["track_origin"]["efficiency"][c], 3) for m in with_origin]
            lines.append(f"| {c} | " + " | ".join(effs) + " |")
        accs = [_fmt(m["track_origin"]["accuracy"], 3) for m in with_origin]
        lines += ["| **accuracy** | " + " | ".join(accs) + " |", ""]
        for m in with_origin:
            cm = m["track_origin"]
            lines += [
                f"Confusion matrix of {m['label']} (rows: truth, columns: predicted; "
                f"{cm['n_tracks']} tracks):",
                "",
            ]
            lines += ["| truth \\ pred | " + " | ".join(TRACK_ORIGINS) + " |"]
            lines.append("|---" * (len(TRACK_ORIGINS) + 1) + "|")
            for c, row in zip(TRACK_ORIGINS, cm["row_normalised"]):
                lines.append(f"| {c} | " + " | ".join(_fmt(v, 3) for v in row) + " |")
            lines.append("")

    with_vertex = [m for m in models if m["vertexing"] is not None]
    if with_vertex:
        lines += [
            "## Vertexing",
            "",
            "Over pairs of distinct valid tracks of one jet: "
            "efficiency = correct / truth same-vertex pairs, purity = correct / predicted "
            "same-vertex pairs. Secondary: truth vertex index > 0; its purity counts the "
            "predicted pairs with a track from a truth secondary vertex.",
            "",
        ]
        lines += [
            "| model | eff. (all) | purity (all) | eff. (secondary) | purity (secondary) "
            "| truth pairs | predicted pairs |",
            "|---" * 7 + "|",
        ]
        for m in with_vertex:
            v = m["vertexing"]
            lines.append(
                f"| {m['label']} | {_fmt(v['all']['efficiency'], 3)} "
                f"| {_fmt(v['all']['purity'], 3)} | {_fmt(v['secondary']['efficiency'], 3)} "
                f"| {_fmt(v['secondary']['purity'], 3)} | {v['pair_counts']['truth']} "
                f"| {v['pair_counts']['pred']} |"
            )
        lines.append("")

    found = report.get("vertex_finding")
    if found:
        crit = found["criteria"]
        lines += [
            "## Vertex finding (MaskFormer objects)",
            "",
            f"A predicted object finds a true one when it holds >= {crit['min_efficiency']:g} "
            f"of the true object's tracks and >= {crit['min_purity']:g} of its own tracks are "
            f"the true object's (one to one; mask: sigmoid > {crit['mask_threshold']:g}). "
            "Efficiency = found / true objects with tracks; fake rate = predicted objects "
            "finding nothing / predicted objects of the class.",
            "",
            "| class | efficiency | fake rate | true | found | predicted | fake |",
            "|---" * 7 + "|",
        ]
        counts, rates = found["counts"], found["rates"]
        for name in found["classes"]:
            lines.append(
                f"| {name} | {_fmt(rates[f'{name}_eff'], 3)} "
                f"| {_fmt(rates[f'{name}_fake_rate'], 3)} | {counts[f'{name}_true']} "
                f"| {counts[f'{name}_found']} | {counts[f'{name}_pred']} "
                f"| {counts[f'{name}_fake']} |"
            )
        lines += [
            f"| all | {_fmt(rates['all_eff'], 3)} | {_fmt(rates['all_fake_rate'], 3)} | | | | |",
            "",
        ]

    plots = [report["plots"]["roc"], *report["plots"]["track_origin"]]
    lines += ["## Plots", "", *[f"- ![{p}]({p})" for p in plots], ""]
    return "\n".join(lines)
