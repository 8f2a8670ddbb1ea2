"""A small Chinese NER corpus generated from name lists and sentence templates (written for nerft, not taken
from any dataset). Labels are CCFBDCI's: LOC (地点), PER (人名), GPE (地理实体), ORG (组织).

Templates mark slots as ``{PER}``, ``{GPE}`` ...; a document is a template with each slot filled by a random
entry of that label's list, so every entity's offsets are known exactly.
"""

from __future__ import annotations

import random
import re

from ..schema import Document, Entity

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈"
GIVEN_NAMES = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "超", "秀英",
               "华", "平", "刚", "建国", "晓明", "海燕", "志强", "春梅", "文博", "子涵", "浩然", "雨桐", "思远"]
ENTRIES = {
    "GPE": ["北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "天津", "苏州", "长沙",
            "中国", "日本", "法国", "德国", "美国", "英国", "俄罗斯", "巴西", "印度", "浙江省", "四川省", "云南省",
            "广东省", "江苏省"],
    "LOC": ["长江", "黄河", "泰山", "黄山", "西湖", "太湖", "洞庭湖", "珠江", "天山", "昆仑山", "长白山", "华山",
            "青藏高原", "东海", "南海", "人民广场", "中山路", "解放大道", "滨江公园", "望京街"],
    "ORG": ["新华社", "国务院", "清华大学", "北京大学", "复旦大学", "人民银行", "中国科学院", "红星机械厂",
            "光明日报社", "长风科技公司", "蓝海集团", "东方航空", "市人民医院", "联合国", "世界卫生组织",
            "青年志愿者协会", "阳光食品公司", "明德中学"],
}
TEMPLATES = [
    "{PER}昨天在{GPE}参观了{ORG}。",
    "{PER}和{PER}一起游览了{LOC}。",
    "据{ORG}报道，{GPE}今年的经济增长较快。",
    "{ORG}的{PER}表示，明年将在{GPE}设立分部。",
    "{PER}出生在{GPE}，后来考入了{ORG}。",
    "去年夏天，{PER}沿着{LOC}徒步旅行。",
    "{GPE}与{GPE}签署了新的合作协议。",
    "{ORG}宣布{PER}担任新一任负责人。",
    "游客们在{LOC}附近拍照留念。",
    "{PER}说{LOC}的风景非常美丽。",
    "{ORG}在{GPE}举办了一场发布会。",
    "{PER}从{GPE}飞往{GPE}参加会议。",
    "记者从{ORG}获悉，{LOC}的水位持续上涨。",
    "{PER}是{ORG}的一名工程师。",
    "{GPE}的代表团访问了{ORG}。",
    "周末，{PER}带着孩子去{LOC}散步。",
    "{ORG}向{GPE}捐赠了一批医疗物资。",
    "{PER}在{LOC}边遇到了老朋友{PER}。",
]
NO_ENTITY = [
    "今天的天气非常好。", "会议将在下午三点开始。", "这本书很有意思。", "大家都觉得这个办法可行。",
    "他每天早上都去跑步。", "我们明天再讨论这个问题。", "价格比去年上涨了一些。", "孩子们在操场上踢球。",
    "这家店的面条很好吃。", "请大家注意安全。", "比赛结果令人满意。", "新的规定从下个月起实行。",
]
_SLOT = re.compile(r"\{(PER|GPE|LOC|ORG)\}")


def _person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN_NAMES)


def fill_template(template: str, rng: random.Random, doc_id: str) -> Document:
    """Fill each slot of ``template`` and record its span."""
    text, entities, last = "", [], 0
    for m in _SLOT.finditer(template):
        text += template[last:m.start()]
        label = m.group(1)
        value = _person(rng) if label == "PER" else rng.choice(ENTRIES[label])
        entities.append(Entity(len(text), len(text) + len(value), label, value))
        text += value
        last = m.end()
    text += template[last:]
    return Document(doc_id, text, entities)


def generate_corpus(n_docs: int = 400, seed: int = 0, no_entity_share: float = 0.1) -> list[Document]:
    """``n_docs`` documents: templated sentences (one or two joined) and some without any entity."""
    rng = random.Random(seed)
    docs = []
    for i in range(n_docs):
        if rng.random() < no_entity_share:
            docs.append(Document(f"demo-{i}", rng.choice(NO_ENTITY)))
            continue
        doc = fill_template(rng.choice(TEMPLATES), rng, f"demo-{i}")
        if rng.random() < 0.25:  # some two-sentence documents
            second = fill_template(rng.choice(TEMPLATES), rng, "")
            shift = len(doc.text)
            doc = Document(doc.id, doc.text + second.text, doc.entities + [
                Entity(e.start + shift, e.end + shift, e.label, e.text) for e in second.entities])  # type: ignore[operator]
        docs.append(doc)
    return docs


def corpus_characters() -> set[str]:
    """Every character the generator can emit."""
    chars = set(SURNAMES) | set("".join(GIVEN_NAMES)) | set("".join(TEMPLATES)) | set("".join(NO_ENTITY))
    for values in ENTRIES.values():
        chars |= set("".join(values))
    return chars - set("{}") | set("{}")
