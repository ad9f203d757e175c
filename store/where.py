"""A small, safe expression language over a table's columns (`aceforge shards filter --where`).

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | compare
    compare := column op value | column "in" "(" value ("," value)* ")" | column "is" ["not"] "null"
    op      := "==" | "!=" | "<" | "<=" | ">" | ">="
    value   := number | 'text' | "text" | true | false

An expression is parsed into a pyarrow compute expression (never Python's eval): names are only the table's
columns, values only literals. A comparison with a null score is null, so the row is not kept: write
`changed_out_mask is null or changed_out_mask < 0.02` to keep the samples that have no mask.
"""

from __future__ import annotations

import re

import pyarrow.compute as pc

_TOKEN = re.compile(r"\s*(?:(?P<num>-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(?P<str>'[^']*'|\"[^\"]*\")"
                    r"|(?P<op>==|!=|<=|>=|<|>)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))")
_OPS = {"==": "equal", "!=": "not_equal", "<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal"}
_WORDS = {"and", "or", "not", "in", "is", "null", "true", "false"}


class WhereError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise WhereError(f"cannot read {text[pos:].strip()[:20]!r} at character {pos + 1} of the expression")
        kind = m.lastgroup
        val = m.group(kind)
        if kind == "name" and val.lower() in _WORDS:
            kind, val = "word", val.lower()
        out.append((kind, val))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, columns: list[str]):
        self.toks = _tokens(text)
        self.i = 0
        self.columns = columns

    def peek(self, *want: str) -> bool:
        return self.i < len(self.toks) and self.toks[self.i][1] in want

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise WhereError("the expression ends too early")
        self.i += 1
        return self.toks[self.i - 1]

    def expect(self, value: str) -> None:
        kind, got = self.take()
        if got != value:
            raise WhereError(f"expected {value!r}, found {got!r}")

    def parse(self):
        e = self.expr()
        if self.i != len(self.toks):
            raise WhereError(f"unexpected {self.toks[self.i][1]!r} after a complete expression")
        return e

    def expr(self):
        e = self.term()
        while self.peek("or"):
            self.take()
            e = e | self.term()
        return e

    def term(self):
        e = self.factor()
        while self.peek("and"):
            self.take()
            e = e & self.factor()
        return e

    def factor(self):
        if self.peek("not"):
            self.take()
            return ~self.factor()
        if self.peek("("):
            self.take()
            e = self.expr()
            self.expect(")")
            return e
        return self.compare()

    def value(self):
        kind, v = self.take()
        if kind == "num":
            return float(v) if any(c in v for c in ".eE") else int(v)
        if kind == "str":
            return v[1:-1]
        if kind == "word" and v in ("true", "false"):
            return v == "true"
        raise WhereError(f"expected a number, 'text', true or false; found {v!r}")

    def compare(self):
        kind, name = self.take()
        if kind != "name":
            raise WhereError(f"expected a column name, found {name!r}")
        if name not in self.columns:
            raise WhereError(f"unknown column {name!r}; columns: {', '.join(self.columns)}")
        col = pc.field(name)
        if self.peek("is"):
            self.take()
            negate = self.peek("not")
            if negate:
                self.take()
            self.expect("null")
            return ~col.is_null() if negate else col.is_null()
        if self.peek("in"):
            self.take()
            self.expect("(")
            values = [self.value()]
            while self.peek(","):
                self.take()
                values.append(self.value())
            self.expect(")")
            return col.isin(values)
        kind, op = self.take()
        if kind != "op":
            raise WhereError(f"expected a comparison after {name!r}, found {op!r}")
        return getattr(pc, _OPS[op])(col, self.value())


def parse_where(text: str, columns: list[str]):
    """A pyarrow compute expression for `text` over `columns`; WhereError with a one-line reason otherwise."""
    if not text.strip():
        raise WhereError("empty expression")
    return _Parser(text, list(columns)).parse()


def select(table, text: str):
    """The rows of a pyarrow table `text` keeps (null counts as not kept)."""
    import pyarrow as pa

    expr = parse_where(text, table.column_names)
    try:
        return table.filter(expr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise WhereError(f"cannot evaluate the expression: {str(e).splitlines()[0]}") from None
