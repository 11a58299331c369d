"""ModelSummary: the model's parameters as a plain table on stdout, when training starts.

Lightning's summary has a FLOPs column and a ``Total FLOPs`` line, which read 0 unless the model
defines an example input (salt's models take dicts of packed tensors, so they do not): a column
of zeros tells a reader nothing, and looks like a bug. salt prints the rest.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count


class ModelSummary(LightningModelSummary):
    """Modules with their type, parameter count and mode; then totals (FLOPs only when known).

    Parameters
    ----------
    max_depth
        Depth of submodules listed (1: the wrapper's direct children).
    """

    def __init__(self, max_depth: int = 1):
        super().__init__(max_depth=max_depth)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs,
    ) -> None:
        columns = [
            (name, values) for name, values in summary_data if name != "FLOPs" or total_flops
        ]
        if not columns:
            return
        widths = [max(len(name), *(len(v) for v in values)) for name, values in columns]
        rows = [[name for name, _ in columns]]
        rows += [list(row) for row in zip(*(values for _, values in columns))]
        lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))

        def count(n: int) -> str:
            return get_human_readable_count(int(n)).strip()

        lines.append(
            f"Trainable params: {count(trainable_parameters)}  "
            f"Non-trainable params: {count(total_parameters - trainable_parameters)}  "
            f"Total: {count(total_parameters)} ({model_size:.1f} MB)"
        )
        if total_flops:
            lines.append(f"Total FLOPs: {count(total_flops)}")
        print("\n".join(lines), flush=True)
