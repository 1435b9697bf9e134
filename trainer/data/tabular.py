"""Any CSV as a table of float features and one label column, read as a stream.

Shared by the in-memory loader (``trainer.data.csv_table``) and the streaming
converter: nothing here imports TensorFlow, and no function holds more than one
chunk of the file in memory.

The format: UTF-8 (a byte order mark is fine), comma-separated, a header row
naming the columns (names optionally quoted and padded with spaces), then one
row per line; blank lines are skipped. Every column but the label column is a
feature and must hold a number that is finite in float32 (optionally quoted
and padded with spaces); the label cell is any non-empty text. A quoted cell
cannot span lines.

Every problem is one ``DataError`` line naming the file, the line (the header
is line 1) and the column, e.g.
``train.csv line 7, column 'pixel3': 'abc' is not a number``.

Reading is fast where the data allow: a chunk of lines whose feature cells are
all plain decimals (``-12``, ``0.5``: digits, at most one ``.``, an optional
leading ``-``, at most 15 digits) and whose labels are unquoted or quoted whole
(``"setosa"``) is parsed with vectorised NumPy; any other chunk with
``np.loadtxt``; and only a chunk that fails both is re-read cell by cell in
Python, to name its first problem (or to read what the fast reads could not).
All three give bit-identical values.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from trainer.errors import DataError
from trainer.files import open_regular_file
from trainer.resources import human_bytes

# A decimal at or beyond this rounds to infinity in float32 (max + half an ulp).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103
_INT64_LIMIT = 2**63
_MAX_LINE = 1 << 26  # a line longer than this is not a CSV row
_CHUNK_BYTES = 1 << 19  # raw text parsed at a time: small arrays stay in cache
_COUNT_BLOCK = 1 << 24  # bytes read at a time when only counting lines
_MOMENT_BLOCK = 4096  # rows converted to float64 at a time by Moments.update
_INTEGER = re.compile(r"[+-]?[0-9]+")
_POWERS_OF_10 = 10.0 ** np.arange(18)  # exact in float64


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Consecutive data rows of a CSV, in file order.

    Attributes:
      features: float32 ``[k, D]``, the feature columns in header order.
      labels: str ``[k]``, the label cells as written (quotes and surrounding
        spaces removed); never empty.
      lines: int64 ``[k]``, each row's line in the file (the header is line 1).
    """

    features: np.ndarray
    labels: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.lines)


# -- header ------------------------------------------------------------------------
def _not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    return (
        f"not UTF-8 text (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of the line); "
        "save the CSV as UTF-8"
    )


def _cannot_read(path: str, error: OSError) -> DataError:
    return DataError(f"{path}: cannot read ({error.strerror or error})")


def read_header(path: str, label_column: str = "label") -> list[str]:
    """The column names of line 1: byte order mark, quotes and surrounding spaces removed.

    Raises:
      DataError: the file cannot be read, is empty or not UTF-8, its first
        line is not a header, has fewer than 2 columns, or has no column (or
        more than one) named ``label_column``.
    """
    try:
        with open_regular_file(path, "CSV file") as handle:
            raw = handle.readline(_MAX_LINE)
    except OSError as error:
        raise _cannot_read(path, error) from None
    example = f"{label_column},pixel0,..." if label_column == "label" else f"{label_column},x1,..."
    if not raw:
        raise DataError(f"{path}: empty file; expected a header row such as {example}")
    if len(raw) >= _MAX_LINE and not raw.endswith(b"\n"):
        raise DataError(f"{path} line 1: longer than {human_bytes(_MAX_LINE)}; not a CSV header")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} line 1: {_not_utf8(raw, error)}") from None
    try:
        header = next(csv.reader([text], skipinitialspace=True), [])
    except csv.Error as error:
        raise DataError(f"{path} line 1: {error}") from None
    columns = [name.strip().strip('"').strip() for name in header]
    if not any(columns):
        raise DataError(f"{path} line 1: empty; expected a header row such as {example}")
    if label_column not in columns:
        shown = ",".join(columns[:4]) + (",..." if len(columns) > 4 else "")
        raise DataError(
            f"{path}: no {label_column!r} column in the header row (line 1: {shown}); "
            "name the label column with --label_column"
        )
    if columns.count(label_column) > 1:
        raise DataError(
            f"{path} line 1: {columns.count(label_column)} columns are named {label_column!r}"
        )
    if len(columns) < 2:
        raise DataError(f"{path}: needs a label column and at least one feature column")
    return columns


def count_lines(path: str) -> int:
    """Lines in the file, the header included (a last line without ``\\n`` counts)."""
    count, last = 0, b"\n"
    try:
        with open_regular_file(path, "CSV file") as handle:
            while block := handle.read(_COUNT_BLOCK):
                count += block.count(b"\n")
                last = block[-1:]
    except OSError as error:
        raise _cannot_read(path, error) from None
    return count + (last != b"\n")


# -- rows ----------------------------------------------------------------------------
def _number(text: str) -> float | None:
    """``text`` (stripped) as a float the way ``np.loadtxt`` reads numbers, or ``None``."""
    if not text.isascii() or "_" in text:  # float() takes these, loadtxt does not
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _feature_problem(cell: str) -> tuple[float, str | None]:
    """``(value, None)`` for a good feature cell, else ``(nan, problem)``."""
    text = cell.strip()
    if not text:
        return math.nan, "empty cell (a missing value)"
    value = _number(text)
    if value is None:
        return math.nan, f"{text!r} is not a number"
    if not (math.isfinite(value) and abs(value) < _FLOAT32_OVERFLOW):
        return math.nan, (
            f"{text} is not a finite float32 number (features must be finite, |x| <= 3.4e38)"
        )
    return value, None


class _Reader:
    """Splits a CSV (after its header) into batches of non-blank lines."""

    def __init__(self, path: str, rows: int, max_bytes: int):
        self.path, self.rows, self.max_bytes = path, rows, max_bytes

    def batches(self) -> Iterator[tuple[list[bytes], list[int], int]]:
        """Yields ``(lines of text, their line numbers, blank lines before them)``."""
        try:
            with open_regular_file(self.path, "CSV file") as handle:
                handle.readline(_MAX_LINE)  # the header, checked by read_header
                number, records, numbers, size, blank = 1, [], [], 0, 0
                while raw := handle.readline(_MAX_LINE):
                    number += 1
                    if len(raw) >= _MAX_LINE and not raw.endswith(b"\n"):
                        raise DataError(
                            f"{self.path} line {number}: longer than "
                            f"{human_bytes(_MAX_LINE)}; not a CSV row"
                        )
                    if raw in (b"\n", b"\r\n"):
                        blank += 1
                        continue
                    records.append(raw)
                    numbers.append(number)
                    size += len(raw)
                    if len(records) >= self.rows or size >= self.max_bytes:
                        yield records, numbers, blank
                        records, numbers, size, blank = [], [], 0, 0
                if records or blank:
                    yield records, numbers, blank
        except OSError as error:
            raise _cannot_read(self.path, error) from None


def _plain_chunk(buffer: bytes, rows: int, width: int, label: int):
    """Vectorised parse of ``rows`` lines of plain decimals; ``None`` if not that simple.

    A feature cell must be ``-?digits[.digits]`` (or ``.5``, ``5.``) with at most
    15 digits, so its value (an exact integer over a power of ten, divided in
    float64 then rounded to float32) is the one ``np.loadtxt`` reads. The label
    cell may hold anything but a comma or NUL, and quotes only around it all.

    Returns:
      ``(features float32 [rows, D], label bytes S [rows])`` or ``None``.
    """
    if b"\0" in buffer or len(buffer) >= 2**31 - 64:
        return None
    if b"\r" in buffer:
        if buffer.count(b"\r") != buffer.count(b"\r\n"):
            return None
        buffer = buffer.replace(b"\r\n", b"\n")
    if not buffer.endswith(b"\n"):
        buffer += b"\n"
    cells = _cells(buffer, rows, width, label)
    if cells is None:
        return None
    data, ends, lengths, label_ends, label_lengths = cells
    values = _decimals(buffer, data, ends, lengths, width, label)
    if values is None:
        return None
    features = np.delete(values.reshape(rows, width), label, axis=1).astype(np.float32, copy=False)
    labels = _label_cells(buffer, data, label_ends, label_lengths, rows)
    return None if labels is None else (features, labels)


def _cells(buffer: bytes, rows: int, width: int, label: int):
    """Where each cell ends and how long it is: ``(bytes uint8, ends, lengths,
    label_ends, label_lengths)`` (int32, the label cells' lengths set to 1 in
    ``lengths``), or ``None`` unless every row has ``width`` non-empty cells of
    digits, '-' and '.' (labels apart) no longer than 17 bytes."""
    data = np.frombuffer(buffer, np.uint8)
    newline = data == 10
    ends = np.flatnonzero(newline | (data == 44)).astype(np.int32)  # each cell's separator
    if len(ends) != rows * width or np.count_nonzero(newline) != rows:
        return None
    if not newline[ends[width - 1 :: width]].all():
        return None  # a row with the wrong number of cells
    lengths = np.diff(ends, prepend=np.int32(-1))
    lengths -= 1
    label_ends, label_lengths = ends[label::width].copy(), lengths[label::width].copy()
    lengths[label::width] = 1  # the label cells are read as text below
    # Bytes other than digits, '-', '.' and separators may only be in labels.
    odd = np.flatnonzero(((data < 48) | (data > 57)) & (data != 46) & (data != 45) & (data != 44))
    odd = odd[~newline[odd]]
    if odd.size and np.any(np.searchsorted(ends, odd) % width != label):
        return None
    if lengths.min() < 1 or lengths.max() > 17:
        return None  # an empty cell, or one too long for a plain decimal
    return data, ends, lengths, label_ends, label_lengths


def _decimals(buffer: bytes, data, ends, lengths, width: int, label: int):
    """Every cell's value as a float (float32 or float64 ``[rows * width]``), or
    ``None`` for a cell that is not a plain decimal of at most 15 digits.

    Horner's rule over each cell's bytes, from the longest cell's first byte on:
    bytes before a cell's start are masked out (leading zeros), a '.' is skipped
    and remembered (with the digits after it), a '-' must start the cell.
    """
    longest = int(lengths.max())
    has_dot, has_minus = b"." in buffer, b"-" in buffer
    mantissa = np.zeros(len(ends), np.int64 if longest > 9 else np.int32)
    places = np.zeros(len(ends), np.int8)  # digits after the '.'
    dots = np.zeros(len(ends), np.int8)
    negative = np.zeros(len(ends), bool)
    for offset in range(longest, 0, -1):
        byte = data.take(ends - offset, mode="clip")
        inside = lengths >= offset
        digit = byte - np.uint8(48)
        # Inside a feature cell, only '-' and '.' are not digits (labels do not count).
        digit *= (digit <= 9) & inside if has_dot or has_minus else inside
        if has_minus:
            minus = (byte == 45) & inside
            if np.any(minus & (lengths != offset)):
                return None  # a '-' that does not start its cell
            negative |= minus
        if has_dot:
            dot = (byte == 46) & inside
            dots += dot
            places[dot] = offset - 1
            mantissa = np.where(dot, mantissa, mantissa * 10 + digit)
        else:
            mantissa *= 10
            mantissa += digit
    if has_dot or has_minus or longest > 15:
        digits = lengths - negative - dots
        digits[label::width] = 1
        if digits.min() < 1 or digits.max() > 15 or dots.max() > 1:
            return None  # no digit, too many for float64, or two dots
    if has_dot or longest > 7:  # beyond 2**24, integers are exact only in float64
        values = mantissa.astype(np.float64)
        if has_dot:
            values /= _POWERS_OF_10.take(places)
    else:
        values = mantissa.astype(np.float32)
    np.negative(values, out=values, where=negative)
    return values


def _label_cells(buffer: bytes, data, label_ends, label_lengths, rows: int):
    """The label cells as bytes ``S [rows]``, unquoted; ``None`` for a label over
    256 bytes or quotes anywhere but around a whole label."""
    widest = int(label_lengths.max())
    if widest > 256:
        return None
    if widest == 0:
        return np.zeros(rows, "S1")
    spots = (label_ends - label_lengths)[:, None] + np.arange(widest, dtype=np.int32)
    grid = np.where(np.arange(widest) < label_lengths[:, None], data.take(spots, mode="clip"), 0)
    labels = np.ascontiguousarray(grid, np.uint8).view(f"S{widest}").ravel()
    if b'"' in buffer:  # only as "label" (as R's write.csv quotes text): unquote it
        quotes = np.strings.count(labels, b'"')
        quoted = quotes > 0
        whole = (
            (quotes == 2)
            & np.strings.startswith(labels, b'"')
            & np.strings.endswith(labels, b'"')
            & (label_lengths >= 2)
        )
        if np.any(quoted & ~whole):
            return None
        labels = labels.astype(object)
        labels[quoted] = [label[1:-1] for label in labels[quoted].tolist()]
        labels = labels.astype(f"S{widest}")
    return labels


def _loadtxt_chunk(text: str, records: list[bytes], width: int, label: int):
    """``np.loadtxt`` of the lines in ``text``: ``(features, labels)``, or ``None``."""
    if '"' in text and any(record.count(b'"') % 2 for record in records if b'"' in record):
        return None  # an unclosed quote, which loadtxt would read across lines
    labels: list[str] = []

    def keep_label(cell: str) -> float:
        labels.append(cell)
        return 0.0

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            table = np.loadtxt(
                io.StringIO(text), delimiter=",", dtype=np.float32, comments=None,
                quotechar='"', converters={label: keep_label}, ndmin=2,
            )  # fmt: skip
    except ValueError:
        return None
    if table.shape != (len(records), width) or len(labels) != len(records):
        return None
    return np.delete(table, label, axis=1), np.array(labels, dtype=str)


def _slow_chunk(path, columns, label, records, numbers) -> Chunk:
    """Reads the lines cell by cell: a ``Chunk``, or ``DataError`` naming the first problem."""
    width = len(columns)
    features = np.empty((len(records), width - 1), np.float32)
    labels = []
    for row, (raw, number) in enumerate(zip(records, numbers)):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path} line {number}: {_not_utf8(raw, error)}") from None
        try:
            cells = next(csv.reader([text], strict=True), [])
        except csv.Error as error:
            hint = "; a quoted cell must end on its line" if "end of data" in str(error) else ""
            raise DataError(f"{path} line {number}: {error}{hint}") from None
        if len(cells) != width:
            raise DataError(
                f"{path} line {number}: {len(cells)} cell{'s' * (len(cells) != 1)}, "
                f"but the header has {width} columns"
            )
        values = []
        for index, cell in enumerate(cells):
            if index == label:
                labels.append(cell.strip())
                if not labels[-1]:
                    problem = "empty cell (a missing value)"
                    raise DataError(f"{path} line {number}, column {columns[index]!r}: {problem}")
                continue
            value, problem = _feature_problem(cell)
            if problem:
                raise DataError(f"{path} line {number}, column {columns[index]!r}: {problem}")
            values.append(value)
        features[row] = values
    return Chunk(features, np.array(labels, dtype=str), _lines(numbers))


def _parse(path, columns, label, records, numbers) -> Chunk:
    """The fast reads, and the slow one where they fail (to name the problem)."""
    buffer = b"".join(records)
    text = None
    if not buffer.isascii():
        try:
            text = buffer.decode("utf-8")
        except UnicodeDecodeError:
            return _slow_chunk(path, columns, label, records, numbers)
    result = _plain_chunk(buffer, len(records), len(columns), label)
    if result is not None:
        features, raw_labels = result
        if raw_labels.dtype.itemsize and np.max(raw_labels.view(np.uint8)) >= 128:
            labels = np.array([cell.decode("utf-8") for cell in raw_labels.tolist()], dtype=str)
        else:
            labels = raw_labels.astype(str)
    else:
        text = text if text is not None else buffer.decode("ascii")
        result = _loadtxt_chunk(text, records, len(columns), label)
        if result is None:
            return _slow_chunk(path, columns, label, records, numbers)
        features, labels = result
    labels = np.strings.strip(labels)
    if np.isfinite(features).all() and not np.any(labels == ""):
        return Chunk(features, labels, _lines(numbers))
    # A chunk is small (max_bytes): the slow read names the problem soon enough.
    return _slow_chunk(path, columns, label, records, numbers)


def _lines(numbers) -> np.ndarray:
    return np.asarray(numbers, np.int64)


def iter_chunks(
    path: str,
    columns: Sequence[str],
    label_column: str = "label",
    rows: int = 65536,
    max_bytes: int = _CHUNK_BYTES,
) -> Iterator[Chunk]:
    """The data rows of the CSV at ``path``, validated, a chunk at a time.

    Args:
      columns: the header, from ``read_header(path, label_column)``.
      rows: at most this many rows a chunk.
      max_bytes: a chunk ends once its lines hold this much text (so wide rows
        make shorter chunks, and memory stays bounded whatever the file's size).

    Yields:
      ``Chunk``s, in file order; blank lines are skipped.

    Raises:
      DataError: naming the file, line and column of the first problem (a row
        with the wrong number of cells, an empty cell, a feature that is not a
        number or not finite in float32, text that is not UTF-8), or saying that
        the file holds no data rows.
    """
    columns = list(columns)
    label = columns.index(label_column)
    if rows < 1:
        raise ValueError(f"rows={rows}: must be >= 1")
    total, blanks = 0, 0
    for records, numbers, blank in _Reader(path, rows, max_bytes).batches():
        blanks += blank
        if records:
            total += len(records)
            yield _parse(path, columns, label, records, numbers)
    if not total:
        raise DataError(
            f"{path}: no data rows, only a header" + (" and blank lines" if blanks else "")
        )


# -- labels ------------------------------------------------------------------------
def _where(path: str | None, line, column: str | None) -> str:
    if path is None:
        return ""
    place = path if line is None else f"{path} line {int(line)}"
    return f"{place}, column {column!r}: " if column is not None else f"{place}: "


def _as_class(text: str):
    """A label's integer class, or ``None`` if it is not a number, or the
    problem (a ``str``) if it is a number but no class."""
    if _INTEGER.fullmatch(text):
        value = int(text)
    else:
        number = _number(text)
        if number is None:
            return None
        if not (math.isfinite(number) and number == round(number)):
            return (
                f"label {text} is not a class (a whole number or a name); "
                "for regression targets pass --loss=mse"
            )
        value = int(number)
    if not -_INT64_LIMIT <= value < _INT64_LIMIT:
        return (
            f"label {text} is not a class: whole-number labels must fit in 64 bits "
            "(|label| < 9.2e18)"
        )
    return value


def _distinct(labels, lines) -> dict[str, int | None]:
    """Distinct stripped labels -> the line of their first row (``None`` if unknown)."""
    if isinstance(labels, Mapping):
        return {str(text).strip(): line for text, line in labels.items()}
    texts = np.strings.strip(np.asarray(labels, dtype=str))
    if texts.size == 0:
        return {}
    unique, first = np.unique(texts, return_index=True)
    found = np.asarray(lines)[first].tolist() if lines is not None else [None] * len(unique)
    return dict(zip(unique.tolist(), found))


def class_vocabulary(
    labels,
    lines=None,
    *,
    path: str | None = None,
    column: str | None = None,
) -> tuple:
    """The classes of these labels, in class-id order.

    If every label is a whole number (``3``, ``12``, ``-1``, `` 7 ``, ``2.0``),
    the classes are the distinct integers, sorted (Python ``int``); otherwise
    the distinct label texts, sorted (so ``"07"`` and ``"7"`` are two names).

    Args:
      labels: label texts (an array or a sequence), or a mapping of distinct
        label texts to the line of their first row.
      lines: with an array of labels, each one's file line, for messages.
      path, column: name the file and the label column in messages.

    Raises:
      DataError: all labels are numbers but one is not a whole number (``1.5``,
        ``nan``) or not within int64, naming its first row's line when known.
    """
    distinct = _distinct(labels, lines)
    classes = {text: _as_class(text) for text in distinct}
    if not classes:
        return ()
    if any(value is None for value in classes.values()):
        return tuple(sorted(classes))
    bad = [text for text, value in classes.items() if isinstance(value, str)]
    if bad:
        text = min(bad, key=lambda t: (distinct[t] is None, distinct[t] or 0, t))
        raise DataError(_where(path, distinct[text], column) + classes[text])
    return tuple(sorted(set(classes.values())))


def describe_classes(vocabulary: Sequence, shown: int = 5) -> str:
    """``"3 classes ('setosa', 'versicolor', 'virginica')"`` or ``"10 classes (0..9)"``."""
    count = f"{len(vocabulary)} class{'es' * (len(vocabulary) != 1)}"
    if not vocabulary:
        return count
    if isinstance(vocabulary[0], str):
        names = ", ".join(repr(name) for name in vocabulary[:shown])
        return f"{count} ({names}{', ...' if len(vocabulary) > shown else ''})"
    if list(vocabulary) == list(range(vocabulary[0], vocabulary[0] + len(vocabulary))):
        return f"{count} ({vocabulary[0]}..{vocabulary[-1]})"
    names = ", ".join(str(name) for name in vocabulary[:shown])
    return f"{count} ({names}{', ...' if len(vocabulary) > shown else ''})"


def unseen_label_message(label, line=None, *, path=None, column=None) -> str:
    """``"<path> line N, column 'species': label 'x' does not occur in the training rows"``."""
    shown = label if isinstance(label, int) else repr(label)
    return _where(path, line, column) + f"label {shown} does not occur in the training rows"


def encode(
    labels,
    vocabulary: Sequence,
    lines=None,
    *,
    path: str | None = None,
    column: str | None = None,
) -> np.ndarray:
    """Label texts -> int64 class ids, the index of each label in ``vocabulary``.

    With an integer vocabulary a label matches by value (`` 07 `` is class 7).

    Raises:
      DataError: a label is not in the vocabulary: ``unseen_label_message`` for
        the first such row (with its line, if ``lines`` are given).
    """
    texts = np.strings.strip(np.asarray(labels, dtype=str))
    if texts.size == 0:
        return np.zeros(0, np.int64)
    unique, inverse = np.unique(texts, return_inverse=True)
    by_integer = bool(vocabulary) and not isinstance(vocabulary[0], str)
    index = {name: i for i, name in enumerate(vocabulary)}
    ids = []
    for text in unique.tolist():
        key = _as_class(text) if by_integer else text
        # With integers, _as_class gives None or a problem (a str) for a non-class.
        ids.append(index.get(key, -1) if isinstance(key, int) == by_integer else -1)
    encoded = np.asarray(ids, np.int64)[inverse.ravel()]
    unknown = np.flatnonzero(encoded < 0)
    if unknown.size:
        row = int(unknown[0])
        text = str(texts[row])
        key = _as_class(text) if by_integer else text
        shown = key if by_integer and isinstance(key, int) else text
        line = np.asarray(lines)[row] if lines is not None else None
        raise DataError(unseen_label_message(shown, line, path=path, column=column))
    return encoded


def targets(
    labels,
    lines=None,
    *,
    path: str | None = None,
    column: str | None = None,
) -> np.ndarray:
    """Label texts -> float32 regression targets.

    Raises:
      DataError: a label is not a number, or not finite in float32, naming the
        first such row's line when ``lines`` are given.
    """
    texts = np.strings.strip(np.asarray(labels, dtype=str))
    if texts.size == 0:
        return np.zeros(0, np.float32)
    unique, inverse = np.unique(texts, return_inverse=True)
    values = np.empty(len(unique), np.float64)
    problems = {}
    for i, text in enumerate(unique.tolist()):
        value = _number(text) if text else None
        if value is None:
            problems[i] = (
                "empty cell (a missing value)"
                if not text
                else f"{text!r} is not a number (a regression target)"
            )
        elif not (math.isfinite(value) and abs(value) < _FLOAT32_OVERFLOW):
            problems[i] = f"{text} is not a finite float32 number (a regression target)"
        values[i] = value if value is not None else math.nan
    inverse = inverse.ravel()
    if problems:
        row = int(np.flatnonzero(np.isin(inverse, list(problems)))[0])
        line = np.asarray(lines)[row] if lines is not None else None
        raise DataError(_where(path, line, column) + problems[int(inverse[row])])
    return values.astype(np.float32)[inverse]


# -- feature statistics ------------------------------------------------------------------
class Moments:
    """Per-feature count, mean, sum of squared deviations (``M2``), and largest
    absolute value, in float64, merged a chunk at a time (Chan et al.'s parallel
    formula), so one pass over a stream gives the exact population statistics.

    ``standardization()`` turns them into the ``(mean, scale)`` that
    standardise a feature as ``(x - mean) / scale``:

    - a constant column (zero variance, up to float64 rounding, as
      scikit-learn's ``StandardScaler`` decides it) gets scale 1.0;
    - any other column gets ``max(std, 1e-6 * max|x|)``: the population
      standard deviation, floored relative to the column's *own* magnitude.
      float32 values differ by at least ~6e-8 of their magnitude, so a column
      that is constant but for rounding noise (a few units in the last place)
      is scaled to at most ~0.1 rather than blown up; and as the floor does not
      depend on the other columns, columns in very different units (a 0/1 flag
      beside an income in dollars) each keep their own scale (a floor such as
      ``1e-3 * largest std`` would divide that flag by 50).
    """

    RELATIVE_FLOOR = 1e-6

    def __init__(self, width: int):
        self.count = 0
        self.mean = np.zeros(width, np.float64)
        self.m2 = np.zeros(width, np.float64)
        self.max_abs = np.zeros(width, np.float64)

    def update(self, features) -> Moments:
        """Adds rows (float ``[k, D]``, or a ``Chunk``); returns ``self``."""
        if isinstance(features, Chunk):
            features = features.features
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise ValueError(f"features of shape {features.shape}; expected [k, {len(self.mean)}]")
        for begin in range(0, len(features), _MOMENT_BLOCK):
            rows = features[begin : begin + _MOMENT_BLOCK]
            other = Moments(len(self.mean))
            other.count = len(rows)
            other.max_abs = np.abs(rows).max(axis=0).astype(np.float64)
            block = rows.astype(np.float64)
            other.mean = block.mean(axis=0)
            block -= other.mean
            other.m2 = np.einsum("ij,ij->j", block, block)
            self.merge(other)
        return self

    def merge(self, other: Moments) -> Moments:
        """Adds another ``Moments``'s rows (Chan's formula); returns ``self``."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.count = other.count
            self.mean, self.m2 = other.mean.copy(), other.m2.copy()
            self.max_abs = other.max_abs.copy()
            return self
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.max_abs = np.maximum(self.max_abs, other.max_abs)
        self.count = total
        return self

    @property
    def variance(self) -> np.ndarray:
        """Population variance, float64 ``[D]``."""
        if not self.count:
            raise ValueError("no rows")
        return self.m2 / self.count

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.variance)

    def standardization(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean float32 [D], scale float32 [D])``; see the class docstring."""
        variance = self.variance
        eps = np.finfo(np.float64).eps
        # scikit-learn's bound on the variance that float64 rounding alone can make.
        bound = self.count * eps * variance + (self.count * self.mean * eps) ** 2
        constant = variance <= bound
        scale = np.maximum(np.sqrt(variance), self.RELATIVE_FLOOR * self.max_abs)
        scale = np.where(constant | (scale == 0), 1.0, scale)
        tiny = float(np.finfo(np.float32).tiny)  # stays > 0 in float32
        return self.mean.astype(np.float32), np.maximum(scale, tiny).astype(np.float32)
