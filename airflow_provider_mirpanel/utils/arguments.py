"""The types of what a DAG author passes to the operators and sensors (their template fields included)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

from airflow.sdk import XComArg

#: IDs: ints or numeric strings, text such as ``"1,2,3"`` or ``"[1, 2, 3]"`` (what a Jinja template
#: renders to), or an upstream task's ``XComArg`` (resolved before ``execute``).
IdsArgument: TypeAlias = Iterable[int | str] | str | XComArg
#: A number, or its text (what a Jinja template renders to); checked when the task runs.
NumberArgument: TypeAlias = float | str
#: Rows (orders, or a catalogue's services): a list of dicts, its JSON or Python text (what a Jinja template
#: renders to), or an upstream task's ``XComArg``.
RowsArgument: TypeAlias = Sequence[Mapping[Any, Any]] | str | XComArg
