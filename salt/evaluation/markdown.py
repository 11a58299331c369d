"""Markdown tables of the evaluation report (b-tagging, Xbb, tracks), rendered from its JSON."""

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
    lines += ["| model | tagger | jets | file |", "|---" * 4 + "|"]
    for m in models:
        n_total = next((m[k]["n_jets"]["total"] for k in ("btag", "xbb") if m[k]), "n/a")
        lines.append(f"| {m['label']} | {m['tagger']} | {n_total} | `{Path(m['file']).name}` |")
    lines.append("")
    for m in models:
        for note in m["notes"]:
            lines.append(f"- {m['label']}: {note}")
    if any(m["notes"] for m in models):
        lines.append("")

    with_btag = [m for m in models if m["btag"] is not None]
    if with_btag:
        fr = with_btag[0]["btag"]["fractions"]
        lines += [
            "## b-tagging working points",
            "",
            f"D_b = log(p_b / (f_c p_c + f_tau p_tau + f_u p_u)) with f_c = {fr['fc']:g}, "
            f"f_tau = {fr['ftau']:g}, f_u = {fr['fu']:g}; cut at the b-jet quantile of each model.",
            "",
        ]
        lines += _section(
            with_btag,
            "btag",
            ("bjets", "cjets", "ujets", "taujets"),
            ("b", "c", "light", "tau"),
            "b_eff",
            (("light_rej", "ujets", "light", 1), ("c_rej", "cjets", "c", 2)),
            several,
        )
    with_xbb = [m for m in models if m["xbb"] is not None]
    if with_xbb:
        fr = with_xbb[0]["xbb"]["fractions"]
        lines += [
            "## Xbb working points",
            "",
            "D_Hbb = log(p_hbb / (f_top p_top + f_hcc p_hcc + f_qcd p_qcd)) with "
            f"f_top = {fr['ftop']:g}, f_hcc = {fr['fhcc']:g}, f_qcd = {fr['fqcd']:g} (p_qcd: all "
            "QCD classes); cut at the hbb-jet quantile of each model.",
            "",
        ]
        lines += _section(
            with_xbb,
            "xbb",
            ("hbb", "top", "qcd"),
            ("hbb", "top", "qcd"),
            "hbb_eff",
            (("top_rej", "top", "top", 1), ("qcd_rej", "qcd", "qcd", 1)),
            several,
        )

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

    plots = [report["plots"][k] for k in ("roc", "roc_xbb") if report["plots"][k]]
    plots += report["plots"]["track_origin"]
    lines += ["## Plots", "", *[f"- ![{p}]({p})" for p in plots], ""]
    return "\n".join(lines)


def _section(
    models: list[dict],
    key: str,
    classes: tuple[str, ...],
    titles: tuple[str, ...],
    eff_key: str,
    columns: tuple[tuple[str, str, str, int], ...],
    several: bool,
) -> list[str]:
    """Jet counts and the working-point table of one discriminant (`btag` or `xbb`).

    `columns` are `(rejection key, class, title, digits)`; with several models, each rejection
    is also given relative to the first model's.
    """
    lines = ["| model | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for m in models:
        n = m[key]["n_jets"]
        lines.append(f"| {m['label']} | " + " | ".join(str(n[c]) for c in classes) + " |")
    lines.append("")
    reference = models[0]["label"]
    head = ["model", eff_key.replace("_eff", "-eff"), "cut"]
    head += [f"{title} rej." for _, _, title, _ in columns]
    if several:
        head += [f"{title} / {reference}" for _, _, title, _ in columns]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    ref = models[0][key]["working_points"]
    for m in models:
        for wp, wp_ref in zip(m[key]["working_points"], ref):
            row = [m["label"], f"{wp[eff_key]:.0%}", _fmt(wp["cut"], 3)]
            for rej_key, cls, _, digits in columns:
                n_bkg = m[key]["n_jets"][cls]
                # No background jet passes the cut: the rejection is only bounded.
                bound = f"> {n_bkg}" if n_bkg and wp.get(rej_key) is None else None
                row.append(bound or _fmt(wp.get(rej_key), digits))
            if several:
                for rej_key, *_ in columns:
                    a, b = wp.get(rej_key), wp_ref.get(rej_key)
                    row.append(_fmt(a / b, 3) if a is not None and b else "n/a")
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines
