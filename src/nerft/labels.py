"""Label sets as data: code -> display name (what the model reads and writes) -> optional description."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .schema import Document, Entity, NerftError
from .textio import read_text


@dataclass(frozen=True)
class Label:
    code: str
    name: str
    description: str = ""


@dataclass
class LabelSet:
    labels: list[Label]
    _by_code: dict[str, Label] = field(init=False, repr=False, compare=False)
    _lookup: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.labels:
            raise NerftError("a label set needs at least one label")
        self._by_code = {}
        self._lookup = {}
        for lab in self.labels:
            if lab.code in self._by_code:
                raise NerftError(f"label code {lab.code!r} appears twice in the label set")
            self._by_code[lab.code] = lab
        named: dict[str, str] = {}
        for lab in self.labels:  # an answer names a label by its name: two labels may not share one
            if lab.name in named:
                raise NerftError(f"labels {named[lab.name]} and {lab.code} have the same name {lab.name!r}: an answer "
                                 f"naming it could only ever mean {named[lab.name]}; give each label a name of its own")
            named[lab.name] = lab.code
        for lab in self.labels:
            other = self._by_code.get(lab.name)
            if other is not None and other is not lab:
                raise NerftError(f"label {lab.code} is named {lab.name!r}, the code of label {other.code}: an answer "
                                 f"naming it would mean {other.code}; give {lab.code} another name")
        # Codes win over names when the two collide; both are also matched case-insensitively.
        for lab in self.labels:
            for key in (lab.name, lab.name.lower()):
                self._lookup.setdefault(key, lab.code)
        for lab in self.labels:
            self._lookup[lab.code] = lab.code
            self._lookup.setdefault(lab.code.lower(), lab.code)

    @property
    def codes(self) -> list[str]:
        return [lab.code for lab in self.labels]

    @property
    def names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, code: str) -> bool:
        return code in self._by_code

    def name_of(self, code: str) -> str:
        """Display name for a code (the code itself when unknown)."""
        lab = self._by_code.get(code)
        return lab.name if lab else code

    def to_code(self, written: str) -> str | None:
        """Map what a model (or a file) wrote, a display name or a code, to a code; None when unknown."""
        written = written.strip()
        return self._lookup.get(written) or self._lookup.get(written.lower())

    def subset(self, codes: Iterable[str]) -> LabelSet:
        wanted = list(codes)
        unknown = [c for c in wanted if c not in self._by_code]
        if unknown:
            raise NerftError(f"unknown label(s) {', '.join(unknown)}; this label set has {', '.join(self.codes)}")
        return LabelSet([self._by_code[c] for c in wanted])

    def to_dict(self) -> dict:
        return {"labels": [{"code": lab.code, "name": lab.name, "description": lab.description} for lab in self.labels]}

    @classmethod
    def from_dict(cls, data: dict | list, source: str = "<label set>") -> LabelSet:
        """Accepts {"labels": [...]}, a list of {code, name, description} or of codes, or a {code: name} map."""
        items = data.get("labels", data) if isinstance(data, dict) else data
        labels = []
        if isinstance(items, dict):
            for code, value in items.items():
                if isinstance(value, dict):
                    labels.append(Label(str(code), str(value.get("name", code)), str(value.get("description", ""))))
                else:
                    labels.append(Label(str(code), str(value if value is not None else code)))
        elif isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, str):
                    labels.append(Label(item, item))
                elif isinstance(item, dict) and "code" in item:
                    unknown = set(item) - {"code", "name", "description"}
                    if unknown:
                        raise NerftError(f"{source}: label {i} has unknown key(s) {', '.join(sorted(unknown))}")
                    code = str(item["code"])
                    labels.append(Label(code, str(item.get("name") or code), str(item.get("description") or "")))
                else:
                    raise NerftError(f"{source}: label {i} must be a string or an object with 'code', got {item!r}")
        else:
            raise NerftError(f"{source}: expected a list or a mapping of labels")
        try:
            return cls(labels)
        except NerftError as exc:
            raise NerftError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> LabelSet:
        path = Path(path)
        try:
            text = read_text(path, advice="save it as UTF-8")  # a bad byte: an InputError with line and offset
        except OSError as exc:
            raise NerftError(f"cannot read label file {path}: {exc.strerror}") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise NerftError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def infer(cls, label_codes: Iterable[str]) -> LabelSet:
        """A label set from the codes seen in data, in order of first appearance; names from built-ins when known."""
        known = {lab.code: lab for ls in BUILTIN_LABEL_SETS.values() for lab in ls().labels}
        seen: dict[str, None] = {}
        for code in label_codes:
            seen.setdefault(code, None)
        if not seen:
            raise NerftError("cannot infer a label set: the data has no entities; pass --labels")
        return cls([known.get(code, Label(code, code)) for code in seen])


def ccfbdci_labels() -> LabelSet:
    # The order and Chinese names are the tutorial's: "提取 地点; 人名; 地理实体; 组织 实体".
    return LabelSet(
        [
            Label("LOC", "地点", "地名、地址，如山川、河流、街道"),
            Label("PER", "人名", "人的姓名"),
            Label("GPE", "地理实体", "国家、城市、省份等地缘政治实体"),
            Label("ORG", "组织", "公司、机构、团体"),
        ]
    )


def cluener_labels() -> LabelSet:
    return LabelSet(
        [
            Label("name", "人名"),
            Label("company", "公司"),
            Label("position", "职位"),
            Label("address", "地址"),
            Label("game", "游戏"),
            Label("organization", "组织机构"),
            Label("government", "政府"),
            Label("scene", "景点"),
            Label("book", "书名"),
            Label("movie", "电影"),
        ]
    )


def weibo_labels() -> LabelSet:
    """Weibo NER's 8 types as the literature scores them: each of PER/ORG/LOC/GPE as a name (.NAM) or a nominal
    mention (.NOM, a common noun that refers to one: 女人, 公司, 城市). The codes keep the dataset's dots."""
    return LabelSet(
        [
            Label("PER.NAM", "人名"),
            Label("PER.NOM", "人称名词"),
            Label("ORG.NAM", "机构名"),
            Label("ORG.NOM", "机构名词"),
            Label("LOC.NAM", "地点名"),
            Label("LOC.NOM", "地点名词"),
            Label("GPE.NAM", "行政区名"),
            Label("GPE.NOM", "行政区名词"),
        ]
    )


BUILTIN_LABEL_SETS = {"ccfbdci": ccfbdci_labels, "cluener": cluener_labels, "weibo": weibo_labels}


def load_label_set(spec: str) -> LabelSet:
    """A built-in name (``ccfbdci``, ``cluener``, ``weibo``) or a YAML/JSON file path."""
    if spec in BUILTIN_LABEL_SETS:
        return BUILTIN_LABEL_SETS[spec]()
    if os.path.exists(spec):
        return LabelSet.from_file(spec)
    raise NerftError(f"label set {spec!r} is neither a built-in ({', '.join(BUILTIN_LABEL_SETS)}) nor a file")


def parse_label_map(spec: str) -> dict[str, str]:
    """A label mapping ``FROM=TO,FROM=TO`` (e.g. ``PER.NAM=PER,ORG.NAM=ORG``), or a YAML/JSON file of
    ``{FROM: TO}``; for scoring a model on data annotated with another label set."""
    if os.path.exists(spec):
        try:
            data = yaml.safe_load(read_text(Path(spec), advice="save it as UTF-8"))
        except yaml.YAMLError as exc:
            raise NerftError(f"{spec}: not valid YAML/JSON: {exc}") from None
        if not isinstance(data, dict) or not data:
            raise NerftError(f"{spec}: a label mapping is a non-empty {{from: to}} mapping")
        return {str(k): str(v) for k, v in data.items()}
    mapping: dict[str, str] = {}
    for pair in (p.strip() for p in spec.split(",") if p.strip()):
        source, sep, target = (x.strip() for x in pair.partition("="))
        if not sep or not source or not target:
            raise NerftError(f"label mapping {pair!r}: write FROM=TO (e.g. PER.NAM=PER), or name a YAML file")
        if source in mapping:
            raise NerftError(f"label mapping: {source!r} is mapped twice")
        mapping[source] = target
    if not mapping:
        raise NerftError("an empty label mapping; write FROM=TO,FROM=TO")
    return mapping


def map_document_labels(docs: Iterable[Document], mapping: dict[str, str]) -> list[Document]:
    """The documents with each entity's label renamed by ``mapping``; entities whose label it does not name are
    dropped (Weibo's .NOM mentions when a CCFBDCI model is scored on its .NAM ones)."""
    return [Document(d.id, d.text, [Entity(e.start, e.end, mapping[e.label], e.text, e.score)
                                    for e in d.entities if e.label in mapping]) for d in docs]
