"""Shared fixtures: a tiny inline Chinese corpus and a pipeline over it with the fake embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import PROJECT_ROOT, Settings

from .fakes import FakeEmbedder

TINY_CORPUS = {
    "a_edu": (
        "职业教育发展的建议\n\n"
        "——访市政协委员 张三\n\n"
        "张三委员建议，加强双师型教师队伍建设，提高职业院校办学水平。\n"
        "他还建议优化职普比，推动产教融合，让更多学生掌握技能。\n\n"
        "2022年，全市职业院校招生人数达到3500人，同比增长12%。\n"
    ),
    "b_deer": (
        "梅花鹿产业调研\n\n"
        "2021年1月27日 星期三\n\n"
        "东丰县梅花鹿存栏量达到15万只，是全国重要的梅花鹿养殖基地。\n"
        "委员们建议延伸产业链条，打造梅花鹿老字号品牌，发展精深加工。\n"
    ),
    "c_report": (
        "政协工作报告\n\n"
        "(2020年1月6日在政协第五次会议上)\n\n"
        "一年来，市政协共收到提案286件，立案257件，办复率达到100%。\n"
        "围绕营商环境开展专题协商，提出意见建议42条。\n"
    ),
}


def write_corpus(folder: Path, files: dict[str, str] = TINY_CORPUS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in files.items():
        (folder / f"{stem}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_settings(tmp_path: Path) -> Settings:
    corpus = write_corpus(tmp_path / "corpus")
    return Settings.from_env(env={}, home=tmp_path / "home", corpus_dir=corpus, chunk_size=60, chunk_overlap=0)


@pytest.fixture
def tiny_pipeline(tiny_settings: Settings):
    from rag.pipeline import Pipeline

    return Pipeline(tiny_settings, embedder=FakeEmbedder(), notify=lambda msg: None).warm_up()


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return PROJECT_ROOT / "seeds"
