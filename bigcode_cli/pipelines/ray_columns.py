"""Result columns for the Python API (pipelines.ray_dataset): a pyarrow batch in, the same batch with typed
label/score/scores or spans columns, truncated and error appended."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bigcode_cli.pipelines.records import Columns, Record
from bigcode_cli.pipelines.results import SEQUENCE, Results


def add_result_columns(table: Any, score: Callable[[list[Record]], list[tuple[Record, Any]]], results: Results,
                       text_column: str) -> Any:
    """A pyarrow batch with the result columns of its `text_column` appended."""
    import pyarrow as pa

    from bigcode_cli.pipelines.parquet import result_types, row_record

    columns = Columns(text=text_column, id="\0no id column")  # the API keeps ids in the user's own columns
    texts = table.column(text_column).to_pylist()
    records = [row_record({text_column: text}, i, i + 1, "<dataset>", columns) for i, text in enumerate(texts)]
    types = result_types(pa)
    names = ["label", "score", "scores"] if results.task == SEQUENCE else ["spans"]
    if results.task == SEQUENCE and results.kind == "multi_label_classification":
        names.append("labels")
    names += ["truncated", "error"]
    values: dict[str, list[Any]] = {name: [] for name in names}
    for record, scored in score(records):
        out = results.record(record, scored) if scored is not None else {}
        for name in names:
            values[name].append(record.error if name == "error" else out.get(name))
    for name in names:
        kind = pa.string() if name == "error" else types[name]
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, pa.array(values[name], type=kind))
    return table
