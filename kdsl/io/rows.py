"""Rows of data as every tool reads them: ``kdsl score``, ``kdsl explain``, ``kdsl eval``,
``kdsl train`` and ``kdsl ablate`` open a data source here, so the same sources work everywhere
and a missing, null or malformed field is the same problem, said in the same words, wherever it
is met.

A source is a jsonl file (``.jsonl``, ``.json``, ``.ndjson``: one JSON object a line), a parquet
file (``.parquet``, ``.pq``), a csv or tsv file, a folder written by ``datasets``'
``save_to_disk``, or a ``datasets`` hub id. Rows are numbered from 0 in the source's order; jsonl
and csv rows also have the 1-based line they start on, which messages give as ``FILE:LINE:``.

``Source.chunks`` streams a source in chunks of rows, so a file of millions of rows is read in
bounded memory; ``RowReader.read`` turns a chunk into columns and completion texts, noting each
bad field in ``problems``; ``read_row`` finds one row; ``load_dataset`` gives a
``datasets.Dataset`` for training.

A completion is a string or a chat (a list of messages, or one message: its last content is the
text scored, as TRL's conversational completions are). Text cells of a csv file are read by the
type of the input they fill: a number for ``float`` and ``int``, ``true``/``false`` for
``bool``, a JSON list for ``vector``, ``box`` and ``boxes``; an empty cell is a missing value,
and a cell that does not read stays text, which the input then reports as the wrong kind.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdsl.errors import KdslDataError, KdslError, Span

COMPLETION = "completion"
MISSING = object()  # a row without the field, told apart from one whose value is null

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv")
SOURCES = ".jsonl, .json, .parquet, .csv, .tsv, a folder saved with save_to_disk or a hub id"

_ASCII_SPACE = " \t\n\r\x0b\x0c"
_BOM = "\ufeff"  # some editors start UTF-8 files with it; it is not part of the first row


# ---- one field --------------------------------------------------------------------------------
def shown(value) -> str:
    """A value from a row as a message quotes it (shortened)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def completion_problem(value) -> str | None:
    """Why a row's ``completion`` value cannot be scored (``MISSING``: the row has none), or
    ``None`` when it can. Said after the field's name: "`completion` ..."."""
    if value is MISSING:
        return "missing; every row needs a completion"
    if value is None:
        return "null; every row needs a completion"
    try:
        completion_text(value)
    except (KdslDataError, AttributeError, TypeError):
        return f"expected a string or a list of chat messages, got {shown(value)}"
    return None


def completion_text(value) -> str:
    """The text scored for a completion value that ``completion_problem`` accepts."""
    from kdsl.runtime.execute import completion_texts

    return completion_texts([value])[0]


def cell_value(text: str, kind: str):
    """A csv cell as the value an input of ``kind`` reads (see the module's docstring)."""
    if text == "":
        return "" if kind == "str" else None
    if kind in ("float", "int"):
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if kind == "int" and number.is_integer() else number
    if kind == "bool":
        return {"true": True, "false": False, "1": True, "0": False, "yes": True,
                "no": False}.get(text.strip().lower(), text)
    if kind in ("vector", "box", "boxes"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


# ---- sources ----------------------------------------------------------------------------------
def data_format(source: str | Path) -> str:
    """``jsonl``, ``parquet``, ``csv`` or ``dataset`` (a ``save_to_disk`` folder or a hub id), from
    the source's name. A file whose name tells no format, or that does not exist, is an error."""
    path = Path(source)
    if path.is_dir():
        return "dataset"
    suffix = path.suffix.lower()
    kind = ("jsonl" if suffix in JSONL_SUFFIXES else "parquet" if suffix in PARQUET_SUFFIXES
            else "csv" if suffix in CSV_SUFFIXES else None)
    if path.is_file():
        if kind is None:
            raise KdslDataError(f"{source}: unknown dataset format {suffix or '(no suffix)'}; use "
                                f"{SOURCES}")
        return kind
    if kind is not None or str(source).startswith((".", "/", "~")):
        raise KdslDataError(f"no such file: {source}")
    return "dataset"  # a hub id: `name` or `owner/name`


@dataclass
class Chunk:
    """Consecutive rows of a source: jsonl chunks are byte ranges of the file (a worker may read
    them itself, so only offsets travel between processes); the other formats carry their rows
    as a parquet record batch or as columns."""

    first_row: int
    size: int  # what the progress bar counts: bytes (jsonl) or rows (the others)
    offset: int = 0  # jsonl: where the chunk's lines start in the file
    length: int = 0  # jsonl: how many bytes of whole lines it has
    data: bytes | None = None  # jsonl: those bytes, unless the worker reads them itself
    first_line: int = 1  # jsonl, csv: the line of the first row when line_numbers is None
    line_numbers: list[int] | None = None  # jsonl: when blank lines were skipped; csv: always
    batch: object = None  # parquet: a pyarrow RecordBatch
    columns: dict | None = None  # csv and datasets: column name -> values
    errors: dict | None = None  # csv: row in the chunk -> why the record is not a row


@dataclass
class Source:
    """A data source, opened: its format, its size for a progress bar, and its chunks."""

    name: str  # as the user wrote it; messages name the source this way
    format: str
    total: int  # bytes of a jsonl file, rows otherwise (csv: bytes, as rows are not counted)
    unit: str  # "bytes" or "rows": what `total` and each chunk's `size` count
    columns: list[str] | None  # the columns a columnar source has (None: jsonl, any row may differ)
    _inputs: tuple[str, ...] = ()
    _dataset: object = None
    _parquet: object = None

    @property
    def has_lines(self) -> bool:
        """Whether rows have line numbers (jsonl and csv files)."""
        return self.format in ("jsonl", "csv")

    def chunks(self, batch_size: int, keep_data: bool = True) -> Iterator[Chunk]:
        """The rows in chunks of ``batch_size``. ``keep_data`` false: jsonl chunks carry only
        their offsets, for a worker that reads the file itself."""
        if self.format == "jsonl":
            return _jsonl_chunks(Path(self.name), batch_size, keep_data)
        if self.format == "parquet":
            return _parquet_chunks(self._parquet, [COMPLETION, *self._inputs], batch_size)
        if self.format == "csv":
            return _csv_chunks(Path(self.name), batch_size)
        return _dataset_chunks(self._dataset, [COMPLETION, *self._inputs], batch_size)


def open_source(source: str | Path, inputs: Sequence[str] = (), split: str = "train") -> Source:
    """Open ``source`` for streaming the ``completion`` column and the columns ``inputs``
    (``split``: the split of a folder or hub dataset). Raises ``KdslError`` when it cannot be
    read or has no ``completion`` column."""
    name = str(source)
    kind = data_format(source)
    path = Path(source)
    if kind == "jsonl":
        try:
            total = path.stat().st_size
        except OSError as err:
            raise KdslError(f"cannot read {name}: {err.strerror or err}") from None
        return Source(name, kind, total, "bytes", None, tuple(inputs))
    if kind == "csv":
        try:
            with path.open(encoding="utf-8-sig", newline="") as f:
                header = next(csv.reader(f, delimiter=_delimiter(path)), [])
            total = path.stat().st_size
        except (OSError, UnicodeDecodeError) as err:
            raise KdslError(f"cannot read {name}: {getattr(err, 'strerror', None) or err}") from None
        _require_completion(name, header)
        return Source(name, kind, total, "bytes", header, tuple(inputs))
    if kind == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise KdslError(f"reading {name} needs pyarrow (pip install pyarrow), or give the rows "
                            "as jsonl or csv") from None

        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as err:
            raise KdslError(f"{name}: cannot read it as parquet ({err})") from None
        names = file.schema_arrow.names
        _require_completion(name, names)
        return Source(name, kind, file.metadata.num_rows, "rows", names,
                      tuple(n for n in inputs if n in names), _parquet=file)
    dataset = load_dataset(source, split)
    _require_completion(name, dataset.column_names)
    return Source(name, kind, len(dataset), "rows", list(dataset.column_names),
                  tuple(n for n in inputs if n in dataset.column_names), _dataset=dataset)


def _require_completion(name: str, columns: Sequence[str]) -> None:
    if COMPLETION not in columns:
        raise KdslError(f"{name}: there is no `completion` column (columns: "
                        f"{', '.join(columns) or 'none'})")


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


# ---- reading chunks -----------------------------------------------------------------------------
class RowReader:
    """Turns chunks of one source into columns and completion texts. ``kinds`` maps each input
    to its kind (``float``, ``enum``, ...), which csv cells are read by. One reader a process: a
    worker's reader keeps the file open to read the byte ranges of jsonl chunks."""

    def __init__(self, source: str, inputs: Sequence[str], kinds: dict[str, str] | None = None,
                 read_path: str | None = None):
        self.source = source
        self.inputs = list(inputs)
        self.kinds = kinds or {}
        self.read_path = read_path or source
        self._file = None

    def read(self, chunk: Chunk, problems: dict) -> tuple[dict[str, list], list[str]]:
        """``(columns, texts)``: each input's values (``None`` where a row has none) and each
        row's completion text. A bad row or field goes into ``problems`` (row in the chunk ->
        ``[(field or None, message)]``); the row is still there, with an empty completion."""
        if chunk.batch is not None:
            batch = chunk.batch
            names = batch.schema.names
            table = {name: batch.column(names.index(name)).to_pylist() for name in names}
            return self._columnar(table, batch.num_rows, problems)
        if chunk.columns is not None:
            table = chunk.columns
            if chunk.line_numbers is not None:  # csv: text cells read by the inputs' kinds
                table = {name: [cell_value(v, self.kinds[name]) for v in values]
                         if name in self.kinds else values for name, values in table.items()}
            for i, error in (chunk.errors or {}).items():
                problems.setdefault(i, []).append((None, error))
            return self._columnar(table, len(table[COMPLETION]), problems)
        rows, texts = self._jsonl(chunk, problems)
        return {name: [row.get(name) for row in rows] for name in self.inputs}, texts

    def _columnar(self, table: dict, n: int, problems: dict) -> tuple[dict, list[str]]:
        texts = list(table[COMPLETION])
        for i, completion in enumerate(texts):
            if type(completion) is not str:
                texts[i] = _completion_text(completion, i, problems)
        return {name: table[name] if name in table else [None] * n for name in self.inputs}, texts

    def _lines(self, chunk: Chunk) -> list:
        data = chunk.data
        if data is None:  # a worker reads its own chunk: only offsets travel between processes
            if self._file is None:
                self._file = open(self.read_path, "rb")  # for the worker's life
            self._file.seek(chunk.offset)
            data = self._file.read(chunk.length)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:  # parsed line by line, so only the lines at fault are bad
            text, newline, space, bom = data, b"\n", _ASCII_SPACE.encode(), _BOM.encode()
        else:
            newline, space, bom = "\n", _ASCII_SPACE, _BOM
        if chunk.offset == 0:
            text = text.removeprefix(bom)
        lines = text.split(newline)
        if data.endswith(b"\n"):
            lines.pop()
        if chunk.line_numbers is not None:  # the reader found blank lines: they are not rows
            lines = [line for line in lines if line.strip(space)]
        return lines

    def _jsonl(self, chunk: Chunk, problems: dict) -> tuple[list[dict], list[str]]:
        rows: list[dict] = []
        texts: list[str] = []
        empty: dict = {}
        loads = json.loads
        for i, line in enumerate(self._lines(chunk)):
            try:
                row = loads(line)
            except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8 text
                reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
                problems.setdefault(i, []).append((None, f"not a JSON object ({reason})"))
                rows.append(empty)
                texts.append("")
                continue
            if type(row) is not dict:
                kind = "null" if row is None else type(row).__name__
                problems.setdefault(i, []).append((None, f"not a JSON object (a JSON {kind})"))
                rows.append(empty)
                texts.append("")
                continue
            completion = row.get(COMPLETION, MISSING)
            rows.append(row)
            texts.append(completion if type(completion) is str
                         else _completion_text(completion, i, problems))
        return rows, texts

    def line(self, chunk: Chunk, i: int) -> int:
        """The line row ``i`` of a jsonl or csv chunk starts on."""
        if chunk.line_numbers is not None:
            return chunk.line_numbers[i]
        return chunk.first_line + i


def _completion_text(value, i: int, problems: dict) -> str:
    problem = completion_problem(value)
    if problem is not None:
        problems.setdefault(i, []).append((COMPLETION, problem))
        return ""
    return completion_text(value)


def _cut(data, start: int, lines: int) -> tuple[int, int, int]:
    """Where the first ``lines`` whole lines of ``data`` from ``start`` end (fewer at its end),
    how many there are, and how many do not start with "{" (JSON objects do; blank lines not)."""
    end, count, others = start, 0, 0
    find = data.find
    while count < lines:
        i = find(b"\n", end)
        if i < 0:
            break
        if data[end] != 123:  # "{"
            others += 1
        end = i + 1
        count += 1
    return end, count, others


def _jsonl_chunks(path: Path, batch_size: int, keep_data: bool) -> Iterator[Chunk]:
    """Chunks of ``batch_size`` lines. The reader only finds where chunks start and how their rows
    are numbered, through a memory map, without copying the file; with ``keep_data`` false a
    worker reads its chunk itself, so the bytes are not sent between processes either."""
    import mmap

    space, bom = _ASCII_SPACE.encode(), _BOM.encode()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset, first_row, next_line = 0, 0, 1
            while offset < size:
                end, lines, others = _cut(data, offset, batch_size)
                if lines == 0:  # the last line, with no newline after it
                    end, lines, others = size, 1, 1
                numbers = None
                if others:  # only then can there be blank lines, which are not rows
                    block = data[offset:end].removeprefix(bom if offset == 0 else b"")
                    kept = [next_line + k for k, line in enumerate(block.split(b"\n")[:lines])
                            if line.strip(space)]
                    if len(kept) != lines:
                        numbers = kept
                rows = lines if numbers is None else len(numbers)
                if rows:
                    yield Chunk(first_row, end - offset, offset=offset, length=end - offset,
                                data=data[offset:end] if keep_data else None, first_line=next_line,
                                line_numbers=numbers)
                offset = end
                first_row += rows
                next_line += lines


def _parquet_chunks(file, columns: list[str], batch_size: int) -> Iterator[Chunk]:
    first_row = 0
    for batch in file.iter_batches(batch_size=batch_size, columns=columns):
        yield Chunk(first_row, batch.num_rows, batch=batch)
        first_row += batch.num_rows


class _Counted(io.TextIOBase):
    """A text file that counts the characters read, for the progress of a csv file."""

    def __init__(self, file):
        self.file = file
        self.read_chars = 0

    def readline(self, size: int = -1) -> str:
        line = self.file.readline(size)
        self.read_chars += len(line)
        return line

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def _csv_chunks(path: Path, batch_size: int) -> Iterator[Chunk]:
    """Chunks of ``batch_size`` records (a quoted cell may hold line breaks, so a record's line
    is the one it starts on). A record with more cells than the header has columns is a bad row;
    one with fewer has the missing cells empty."""
    with path.open(encoding="utf-8-sig", newline="") as raw:
        counted = _Counted(raw)
        reader = csv.reader(counted, delimiter=_delimiter(path))
        header = next(reader, [])
        width = len(header)
        first_row, done = 0, 0
        while True:
            columns: dict[str, list] = {name: [] for name in header}
            lines: list[int] = []
            errors: dict[int, str] = {}
            start = reader.line_num + 1
            for record in reader:
                if not record:  # a blank line is not a row
                    start = reader.line_num + 1
                    continue
                if len(record) > width:
                    errors[len(lines)] = (f"a record of {len(record)} cells, where the header "
                                          f"names {width} columns")
                    record = [""] * width
                lines.append(start)
                start = reader.line_num + 1
                for name, cell in zip(header, record + [""] * (width - len(record))):
                    columns[name].append(cell)
                if len(lines) == batch_size:
                    break
            if not lines:
                return
            size = counted.read_chars - done
            done = counted.read_chars
            yield Chunk(first_row, size, first_line=lines[0], line_numbers=lines, columns=columns,
                        errors=errors or None)
            first_row += len(lines)


def _dataset_chunks(dataset, columns: list[str], batch_size: int) -> Iterator[Chunk]:
    first_row = 0
    for batch in dataset.select_columns(columns).iter(batch_size=batch_size):
        rows = len(batch[COMPLETION])
        yield Chunk(first_row, rows, columns=dict(batch))
        first_row += rows


# ---- one row ----------------------------------------------------------------------------------
def read_row(source: str | Path, index: int, inputs: Sequence[str],
             kinds: dict[str, str] | None = None) -> tuple[dict, Span]:
    """Row ``index`` (from 0) of a source: the columns ``inputs`` (``None`` where the row has no
    value) and its completion as the text scored, and where the row is (``FILE:LINE`` for jsonl
    and csv, else the source).

    Raises ``IndexError`` (its message names the source and how many rows it has) when there is
    no such row, and ``KdslError`` at the row (``FILE:LINE`` where rows have lines) when the row
    or its completion cannot be read.
    """
    opened = open_source(source, inputs)
    reader = RowReader(opened.name, inputs, kinds)
    count = 0
    for chunk in opened.chunks(batch_size=256):
        problems: dict = {}
        columns, texts = reader.read(chunk, problems)
        count = chunk.first_row + len(texts)
        if index >= count:
            continue
        i = index - chunk.first_row
        where = Span(f"{opened.name}:{reader.line(chunk, i)}" if opened.has_lines else opened.name)
        for fieldname, message in problems.get(i, []):
            raise KdslError(f"row {index}, column `{fieldname}`: {message}" if fieldname
                            else f"row {index} is {message}", where)
        return {**{name: values[i] for name, values in columns.items()}, COMPLETION: texts[i]}, where
    rows = f"{count} rows (0 to {count - 1})" if count else "no rows"
    raise IndexError(f"row {index} is out of range: {opened.name} has {rows}")


# ---- a whole dataset, for training ---------------------------------------------------------------
def load_dataset(source, split: str = "train"):
    """A ``datasets.Dataset`` from any source (``split`` picks the split of a folder or hub
    dataset) or from a list of row dicts."""
    import datasets

    if isinstance(source, list):
        return datasets.Dataset.from_list(source)
    kind = data_format(source)
    path = Path(source)
    try:
        if kind == "dataset" and path.is_dir():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split in loaded:
                    return loaded[split]
                if split != "train":
                    raise KdslDataError(f"{source} has no split `{split}` (it has "
                                        f"{', '.join(loaded)})")
                loaded = next(iter(loaded.values()))
            return loaded
        if kind == "jsonl":
            return datasets.load_dataset("json", data_files=str(path), split="train")
        if kind == "parquet":
            return datasets.load_dataset("parquet", data_files=str(path), split="train")
        if kind == "csv":
            return datasets.load_dataset("csv", data_files=str(path), split="train",
                                         delimiter=_delimiter(path))
        return datasets.load_dataset(str(source), split=split)
    except KdslError:
        raise
    except Exception as err:  # datasets raises many kinds; the user needs the message, not a trace
        raise KdslDataError(f"cannot load dataset {source}: {type(err).__name__}: {err}") from None
