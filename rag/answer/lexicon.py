"""General Chinese word lists the answerer uses, each with its source.

Nothing here is taken from the gold questions or the archive: every list is a closed class of
general Chinese (question words, measure words, title nouns, connectives, surnames) as a grammar
or dictionary lists it. Sources:

* **Question words** (疑问代词 and the ``多 + adjective`` degree questions): 吕叔湘 (ed.),
  《现代汉语八百词》 (增订本, 商务印书馆 1999), entries 谁, 什么, 哪, 哪儿, 几, 多少, 怎么, 怎样,
  为什么, 多; 黄伯荣、廖序东《现代汉语》 (增订六版) §"疑问代词".
* **Measure words** (量词): the individual, collective, measurement and time classifiers of
  《现代汉语八百词》 appendix "名词、量词配合表" plus the metric units of 《中华人民共和国法定计量单位》.
* **Currency, percentage and ordinal forms**: 《现代汉语词典》 (第7版) entries 元, 百分之, 百分点,
  成, 倍, 第.
* **Title nouns** (职务称谓): 《现代汉语词典》 entries for the administrative and party titles
  主席, 书记, 局长, 主任, 委员, 科长, ... (the ``-长`` series), used as a closed class.
* **Organisation suffixes** (机构通名): the generic heads of institution names (公司, 集团, 大学, 医院,
  委员会, 局, ...) as listed in the MSRA named-entity annotation guidelines (Levow, "The Third
  International Chinese Language Processing Bakeoff", SIGHAN 2006) for ORG.
* **Causal connectives** (因果关联词): 黄伯荣、廖序东《现代汉语》 §"复句·因果复句".
* **Enumeration markers** (列举): 一是/二是, 首先/其次/再次/最后, (一)/(二), 1./2. — the same
  book, §"并列复句" and common document numbering.
* **Day-deictic time nouns** (今天, 明天, 此刻, ...): 《现代汉语八百词》 entries 今天, 明天, 后天,
  昨天; 黄伯荣、廖序东《现代汉语》 §"时间名词".
* **Common surnames**: the 100 most frequent surnames of the 2020 Ministry of Public Security
  household-register statistics (《二〇二〇年全国姓名报告》), used to keep jieba's ``nr`` tag only
  on words that start like a name.
"""

from __future__ import annotations

#: Function words, question words and question-frame words never counted as topic.
STOPWORDS = frozenset("""
的 了 吗 呢 吧 啊 呀 么 是 有 在 和 与 及 或 对 把 被 为 给 从 向 到 于 以 由 就 都 也 还 又 而 且 并 等
这 那 其 该 此 各 每 个 之 所 将 要 会 能 可 可以 应 应该 让 使 得 地 着 过 中 里 上 下 内 外 才 去 往 用
什么 什么样 哪些 哪个 哪位 哪里 哪儿 哪年 哪一年 哪天 哪家 哪所 哪 谁 几 多少 如何 怎样 怎么 怎么样 为什么
何时 时候 什么时候 时间 第几 是否 是不是 有没有 多大 多长 多高 多久 请问 请 一下 关于 提到 提出 提了
介绍 主要 概括 总结 简述 谈谈 说说 说 讲 谈 提 问 情况 内容 方面 资料 文章 报道 材料 怎样才能
我 我们 你 你们 他 他们 她 它 们 做 做了 进行 开展 一 一个 有关 相关 具体 分别 一些 多 年
担任 职务 职位 为了 对于 一共 共有 总共 还是 没有 打算 现在 目前 这次 这期 那位 一般 已经 曾经
啥 咋 咋样 干啥 为啥 多会儿 呗 嘛 哈 哦 那个 这个 那些 这些 自己 到底 究竟 大概 大约 左右
""".split())

#: Day-deictic time nouns (时间名词 whose reference is the speaker's day: 《现代汉语八百词》 今天,
#: 明天, 后天, 昨天; 黄伯荣、廖序东《现代汉语》 §"时间名词"). A question anchored to the asker's day
#: (the weather tomorrow, prices today) is about the present, which an archive of past documents
#: does not hold; the answerability model weighs it as a feature.
DEICTIC_DAY = ("今天", "今日", "明天", "明日", "后天", "昨天", "昨日", "今晚", "明晚", "今早", "明早",
               "此刻", "今儿", "明儿")

#: Time nouns relative to the speaker's or writer's year (《现代汉语八百词》 去年, 今年, 前年, 明年;
#: 黄伯荣、廖序东《现代汉语》 §"时间名词"). They say when, not what about: a question's 去年 is the
#: archive's 2020年 or its 上年, so they are never topic words.
RELATIVE_YEARS = frozenset(("去年", "今年", "前年", "明年", "后年", "上年", "当年", "近年", "近年来", "往年",
                            "这几年", "近几年", "前几年", "这些年", "这两年", "近两年", "上一年", "头几年"))

#: The future ones among :data:`DEICTIC_DAY` (明天, 后天, ...): an archive of documents written
#: before the question cannot report on a day after it, so such a question is never answered.
FUTURE_DAY = ("明天", "明日", "后天", "明晚", "明早", "明儿")

#: Tokens starting with these are question words (几位, 哪份, 多少户) and never topic.
QUESTION_PREFIXES = ("几", "哪", "多少")

#: Question-type cue tiers, strongest first (see :func:`rag.answer.question.question_type`).
STRONG_LIST_CUES = ("哪些", "哪几", "几个方面", "几点", "几项", "什么建议", "什么措施", "什么举措",
                    "什么做法", "什么意见", "什么变化", "什么成效", "什么成绩", "什么设想", "什么问题",
                    "有什么", "有啥", "为什么", "为何", "如何", "怎样", "怎么", "分别", "各自")
FACTOID_CUES = ("多少", "哪年", "哪一年", "何时", "什么时候", "什么时间", "哪天", "谁", "哪个", "哪位",
                "哪里", "哪儿", "哪家", "哪所", "哪份", "哪次", "哪一", "第几", "是否", "是不是", "有没有",
                "多大", "多长", "多高", "多久", "多远", "多重", "几", "叫啥", "啥名")
WEAK_LIST_CUES = ("介绍", "概括", "总结", "简述", "谈谈", "说说", "举措", "措施", "做法", "情况")

#: Measure words (量词) and units that name what a ``多少 X`` / ``几 X`` question counts.
CLASSIFIERS = (
    "人次", "万人", "个百分点", "百分点", "工作日", "小时", "分钟", "公里", "千米", "平方米", "平方公里",
    "公顷", "公斤", "千克", "万元", "亿元", "美元", "个月",
    "个", "件", "人", "户", "家", "所", "项", "名", "次", "条", "篇", "例", "期", "只", "头", "吨", "亩",
    "座", "批", "届", "位", "辆", "台", "套", "场", "处", "种", "类", "本", "张", "元", "块", "岁", "天",
    "年", "月", "周", "米", "斤", "份", "部", "支", "间", "栋", "床", "股", "架", "艘", "棵", "株", "根",
    "封", "门", "节", "级", "层", "片", "所", "笔", "单", "起", "宗", "轮", "站", "村", "镇", "县", "区",
)
#: Units of money (货币单位).
CURRENCY_UNITS = ("亿元", "万元", "千元", "百元", "美元", "元", "块")
#: Time units of a duration (时段).
DURATION_UNITS = ("个工作日", "工作日", "个月", "小时", "分钟", "天", "日", "年", "月", "周", "星期")
#: Length / area / weight units (法定计量单位).
MEASURE_UNITS = ("公里", "千米", "米", "平方米", "平方公里", "公顷", "亩", "吨", "公斤", "千克", "斤")

#: Title nouns (职务称谓), matched as a word ending (副主席, 党组书记, 局长).
TITLE_WORDS = (
    "主席", "副主席", "书记", "副书记", "局长", "副局长", "主任", "副主任", "委员", "常委", "科长", "处长",
    "厅长", "部长", "院长", "校长", "市长", "副市长", "县长", "区长", "镇长", "乡长", "村长", "秘书长",
    "主委", "副主委", "会长", "副会长", "理事长", "董事长", "总经理", "经理", "所长", "站长", "馆长",
    "队长", "组长", "社长", "总编", "主编", "记者", "代表", "干部", "教师", "医生", "厂长", "行长",
)
#: Generic heads of organisation names (机构通名).
ORG_SUFFIXES = (
    "有限公司", "公司", "集团", "企业", "工厂", "厂", "大学", "学院", "学校", "中学", "小学", "医院",
    "银行", "协会", "学会", "商会", "委员会", "研究院", "研究所", "合作社", "中心", "基地", "机构", "局",
    "厅", "部", "党派", "民主党派", "社", "报社", "电视台", "出版社", "证券", "基金会",
)
#: The eight democratic parties and their short names (a closed class of Chinese civics).
PARTY_NAMES = ("民革", "民盟", "民建", "民进", "农工党", "农工民主党", "致公党", "九三学社", "台盟",
               "共产党", "中共")
#: Causal connectives (因果关联词).
CAUSAL_WORDS = ("因为", "由于", "原因", "为了", "因此", "所以", "导致", "造成", "在于", "以致", "从而",
                "既然", "鉴于", "之所以", "目的是")
#: Enumeration markers starting a list item (列举).
ENUM_PREFIXES = ("首先", "其次", "再次", "再者", "此外", "另外", "最后", "同时")
#: What a list question asks for and what a passage lists, in two kinds (《现代汉语词典》 问题,
#: 困难, 不足, 短板 vs 建议, 措施, 对策, 办法): proposals in the archive state the problems, then the
#: remedies, and ``存在哪些问题`` is answered by the first part, ``有什么建议`` by the second.
PROBLEM_WORDS = ("问题", "困难", "不足", "短板", "瓶颈", "难题", "难处", "毛病", "弊端", "差距", "制约", "薄弱")
REMEDY_WORDS = ("建议", "措施", "对策", "举措", "办法", "做法", "意见", "思路", "打算", "路径")
#: Manner question words (《现代汉语八百词》 怎么, 怎样, 如何; 咋 its colloquial form): a how-question
#: (怎么解决这些问题) asks for remedies whatever noun it names.
HOW_WORDS = ("如何", "怎么", "怎样", "咋")
#: Words that announce a list on the line before it (``建议：``, ``如下：``).
LIST_ANNOUNCERS = ("建议", "如下", "措施", "问题", "举措", "做法", "对策", "意见")
#: Reporters' and writers' by-line words (署名).
BYLINE_WORDS = ("本报记者", "记者", "通讯员", "评论员", "特约", "撰稿")

#: The 100 most frequent Chinese surnames (《二〇二〇年全国姓名报告》, Ministry of Public Security).
COMMON_SURNAMES = frozenset(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩邓冯曹彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任"
    "卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严莫孔"
    "向常汤康易乔赖文")
