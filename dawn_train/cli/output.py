"""What several commands print: a result as JSON or as a two-column table."""
from __future__ import annotations

import json


def print_json_or_table(result: dict, as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(result, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(str(key), json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    Console().print(table)
