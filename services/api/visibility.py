"""What a caller may list: conda-store's rule is that a row is visible when any of the caller's
role bindings (any role) matches it, ``*`` matching any run of name characters. Turned into SQL
so lists are filtered in the database, not in Python."""

from __future__ import annotations

from dataclasses import dataclass, field

from envstore.common.permissions import Principal


def like_pattern(arn_part: str) -> str:
    escaped = arn_part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


@dataclass
class SqlFilter:
    """WHERE fragments and their parameters, numbered as they are added."""

    clauses: list[str] = field(default_factory=list)
    parameters: list[object] = field(default_factory=list)

    def parameter(self, value: object) -> str:
        self.parameters.append(value)
        return f"${len(self.parameters)}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    def where(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"


def restrict_namespaces(sql: SqlFilter, principal: Principal, namespace_column: str) -> None:
    patterns = sorted({arn.partition("/")[0] for arn in principal.effective_bindings()})
    if not patterns:
        sql.add("FALSE")
        return
    sql.add(
        "(" + " OR ".join(f"{namespace_column} LIKE {sql.parameter(like_pattern(p))}" for p in patterns) + ")"
    )


def restrict_environments(
    sql: SqlFilter, bindings: dict[str, list[str]], namespace_column: str, environment_column: str
) -> None:
    patterns = sorted({arn.partition("/")[::2] for arn in bindings})
    if not patterns:
        sql.add("FALSE")
        return
    alternatives = [
        f"({namespace_column} LIKE {sql.parameter(like_pattern(namespace))} AND "
        f"{environment_column} LIKE {sql.parameter(like_pattern(environment or '*'))})"
        for namespace, environment in patterns
    ]
    sql.add("(" + " OR ".join(alternatives) + ")")
