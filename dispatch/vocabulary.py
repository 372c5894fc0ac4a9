"""The words heard on a station's radio channels, for writing the on-board engine's pinyin as characters
(asr/hanzi.py prefers them over other words of the same sound): every word of the incident lexicon (incident, report,
chatter, severity and negation words, the operator's additions included) and generic radio and police phrases.

The jurisdiction's place names and aliases come with the keyword list (`spotter_keywords`, asr/keywords.py).
Everything here is written from general usage of security and police radio; nothing is taken from recordings or the
demo calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dispatch.classify import incident_terms, load_lexicon
from dispatch.config import LexiconExtension

if TYPE_CHECKING:
    from asr.keywords import KeywordEntry

RADIO_PHRASES = (
    # calling, answering, closing
    "各单位", "各岗位", "各小组", "各巡逻组", "请注意", "注意观察", "收到", "收到请回答", "请回答", "请讲", "听到请回答",
    "完毕", "明白", "马上到", "马上过去", "立即", "迅速", "尽快", "保持联系", "保持通话", "原地待命", "注意安全",
    "汇报情况", "情况汇报", "情况属实", "核实情况", "继续观察", "继续巡逻",
    # who and where on the network
    "指挥中心", "指挥室", "值班室", "监控室", "监控中心", "警务点", "警务室", "警务站", "社区警务室", "岗亭", "门岗",
    "保安室", "保安队", "保安队长", "巡逻队", "巡逻组", "巡逻车", "巡防队", "派出所", "社区民警", "民警", "辅警", "警长",
    "值班民警", "值班保安", "网格员", "物业", "物业中心", "治安岗", "东门", "西门", "南门", "北门", "正门", "后门", "侧门",
    "停车场", "地下车库", "单元楼", "楼道", "电梯口", "楼顶", "天台", "路口", "十字路口", "红绿灯", "人行道",
    # what is done
    "赶往现场", "赶到现场", "前往现场", "到达现场", "现场处置", "先期处置", "保护现场", "控制现场", "疏散人群",
    "维持秩序", "请求支援", "增援", "出警", "处警", "接警", "报警人", "报警电话", "嫌疑人", "可疑人员", "可疑车辆",
    "陌生人", "车牌号", "监控录像", "调取监控", "查看监控", "巡查", "排查", "盘查", "登记", "身份证",
)


def decoder_words(lexicon: LexiconExtension | None = None) -> list[str]:
    """The lexicon's words and the radio phrases, for `asr.worker.build_engines(..., words=...)`."""
    return list(dict.fromkeys([*(t.word for t in load_lexicon(lexicon).terms), *RADIO_PHRASES]))


def spotter_keywords(jurisdiction_yaml: Path, lexicon: LexiconExtension | None = None) -> list[KeywordEntry]:
    """What the keyword spotter listens for on a station's channels: the jurisdiction's places (names, aliases and the
    longer short forms people say for them, dispatch/short_names.py) and the incident lexicon's terms."""
    from asr.keywords import jurisdiction_keywords
    from dispatch.gazetteer import load_jurisdiction
    from dispatch.short_names import spotted_short_names

    return jurisdiction_keywords(jurisdiction_yaml, incident_terms(lexicon),
                                 short_names=spotted_short_names(load_jurisdiction(jurisdiction_yaml)))
