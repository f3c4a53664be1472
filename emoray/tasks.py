"""The task catalog: every affect task emoray can annotate, declared as data in one registry.

An entry holds the instruction wording the EmoLLMs models were trained or evaluated on
(`templates[0]` is canonical; the other AAID paraphrases stay available for evaluation), the
emotions it is asked about (`targets`), its answer schema (constraint regex + parser, see
`emoray.answers`), the metrics the paper and SemEval-2018 Task 1 score it with, and the AEB file
holding its gold data.
A new task is one `Task(...)` entry in `TASKS`; `prompt_version` follows from the entry itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from emoray.answers import AnswerSchema, MultiLabel, Ordinal, Regression
from emoray.config import ConfigError

CONVERSATION = "Human: \n{instruction}\n\nAssistant: \n"
"""The training conversation format of the EmoLLMs models: their repository's training data
builder wraps every instruction this way (`emoray/data/aeb/README.md`)."""

EI_EMOTIONS = ("anger", "fear", "joy", "sadness")


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    description: str
    templates: tuple[str, ...]
    answer: AnswerSchema
    metrics: tuple[str, ...]
    """Names in `emoray.quality.metrics.METRICS`; the first is the task's headline metric."""
    targets: tuple[str, ...] = ()
    source: str | None = None
    """AEB/AAID file with gold answers for this task (relative to the data folder)."""
    column: str | None = None
    """The enriched table's column for this task (after the prefix; `{target}` is replaced by
    the request's target); unset: the task name plus its answer kind's suffix."""

    def prompt_version(self, template: int = 0, constrained: bool = True,
                       expected: bool = False, wrapper: str = CONVERSATION) -> str:
        """Changes whenever the wording, the constraint, the model's conversation format
        (`wrapper`, `ModelSpec.prompt_format`) or the scoring rule (`expected`: the expected
        value, not the greedy answer; see `EngineConfig.expected_score`) changes."""
        constraint = self.answer.regex() if constrained else "<unconstrained>"
        parts = [wrapper, self.templates[template], constraint]
        key = "\x1f".join(parts + (["expected value"] if expected else []))
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @property
    def max_tokens(self) -> int:
        """Enough tokens for the longest answer the constraint admits (+1 for end of text):
        with byte-level tokenizers an ASCII token holds at least one character."""
        return self.answer.max_chars() + 1

    def instruction(self, text: str, target: str | None = None, template: int = 0) -> str:
        if bool(target) != bool(self.targets):
            raise ValueError(f"task {self.name} takes targets {self.targets}, got {target!r}")
        out = self.templates[template]
        if target:
            out = out.replace("{target}", target)
        return out.replace("{text}", text)

    def prompt(self, text: str, target: str | None = None, template: int = 0,
               wrapper: str = CONVERSATION) -> str:
        """The instruction inside the model's conversation format (`{instruction}` in
        `wrapper`)."""
        return wrapper.replace("{instruction}", self.instruction(text, target, template))

    def match(self, instruction: str) -> tuple[str, str | None, int] | None:
        """Split an instruction written with one of this task's templates back into
        (text, target, template index), or None when none matches."""
        for i, template in enumerate(self.templates):
            pattern = re.escape(template)
            pattern = pattern.replace(re.escape("{text}"), "(?P<text>.*)")
            pattern = pattern.replace(
                re.escape("{target}"), "(?P<target>" + "|".join(self.targets) + ")"
            )
            m = re.fullmatch(pattern, instruction, flags=re.S)
            if m:
                return m.group("text"), m.groupdict().get("target"), i
        return None


_EI_REG_TEMPLATES = (
    'Task: Assign a numerical value between 0 (least E) and 1 (most E) to represent the intensity of emotion E expressed in the tweet. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Estimate the strength of emotion E in the tweet by assigning it a real-valued score between 0 and 1, where 0 signifies the least intensity and 1 signifies the greatest intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Assess the magnitude of emotion E in the tweet using a real number between 0 and 1, where 0 denotes the least intensity and 1 denotes the most intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Measure the level of emotion E in the tweet using a real-valued score between 0 and 1, where 0 represents the lowest intensity and 1 represents the highest intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Rate the intensity of emotion E in the tweet on a scale of 0 to 1, with 0 indicating the least intensity and 1 indicating the highest intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Calculate the intensity of emotion E in the tweet as a decimal value ranging from 0 to 1, with 0 representing the lowest intensity and 1 representing the highest intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Determine the degree of intensity for emotion E in the tweet, giving it a score between 0 and 1, where 0 signifies the least intensity and 1 signifies the greatest intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Evaluate the strength of emotion E in the tweet, providing a real-valued score from 0 to 1. A score of 0 denotes the absence of the emotion, while a score of 1 indicates the highest degree of intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Gauge the level of intensity for emotion E in the tweet, assigning it a score between 0 and 1. A score of 0 indicates the lowest intensity, while a score of 1 indicates the highest intensity. Tweet: {text} Emotion E: {target}. Intensity Score: ',
    'Task: Quantify the intensity of emotion E in the tweet on a scale of 0 (least E) to 1 (most E). Tweet: {text} Emotion E: {target}. Intensity Score: ',
)

_E_C_TEMPLATES = (
    "Task: Analyze the tweet's sentiment and assign it to either 'neutral or no emotion' or one or more of the specified emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust). Tweet: {text} This tweet contains emotions: ",
    "Task: Analyze the tweet's emotional connotations and classify it as either 'neutral or no emotion' or as one or more of the specified emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust) that best portray the tweeter's mental state. Tweet: {text} This tweet contains emotions: ",
    "Task: Classify the mental state of the tweeter based on the tweet, determining if it is 'neutral or no emotion' or characterized by any of the provided emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust). Tweet: {text} This tweet contains emotions: ",
    "Task: Identify the primary emotion conveyed in the tweet and assign it to either 'neutral or no emotion' or one or more of the provided emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust) that best capture the tweeter's mental state. Tweet: {text} This tweet contains emotions: ",
    "Task: Categorize the tweet's emotional expression, classifying it as either 'neutral or no emotion' or as one or more of the specified emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust) that reflect the tweeter's state of mind. Tweet: {text} This tweet contains emotions: ",
    "Task: Evaluate the tweet for emotional cues and classify it as either 'neutral or no emotion' or as one or more of the specified emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust) that indicate the tweeter's state of mind. Tweet: {text} This tweet contains emotions: ",
    "Task: Assess the emotional content of the tweet and classify it as either 'neutral or no emotion' or as one or more of the given emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust) that best represent the tweeter's mental state. Tweet: {text} This tweet contains emotions: ",
    "Task: Categorize the tweet's emotional tone as either 'neutral or no emotion' or identify the presence of one or more of the given emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust). Tweet: {text} This tweet contains emotions: ",
    "Task: Determine the dominant emotion in the tweet and classify it as either 'neutral or no emotion' or one of the eleven provided emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust). Tweet: {text} This tweet contains emotions: ",
    "Task: Determine the prevailing emotional tone of the tweet, categorizing it as either 'neutral or no emotion' or as one or more of the given emotions (anger, anticipation, disgust, fear, joy, love, optimism, pessimism, sadness, surprise, trust) that most accurately represent the tweeter's mental state. Tweet: {text} This tweet contains emotions: ",
)

_V_OC_TEMPLATES = (
    'Task: Determine the most suitable ordinal classification for the tweet, capturing the emotional state of the tweeter through a range of positive and negative sentiment intensity levels. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ',
    "Task: Place the tweet into an appropriate ordinal class, representing the tweeter's mental state by assessing the levels of positive and negative sentiment intensity conveyed. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ",
    'Task: Assign the tweet to one of seven ordinal classes, each representing a distinct level of positive or negative sentiment intensity, reflecting the mental state of the tweeter. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ',
    "Task: Determine the appropriate ordinal classification for the tweet, reflecting the tweeter's mental state based on the magnitude of positive and negative sentiment intensity conveyed. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ",
    'Task: Categorize the tweet into one of seven ordinal classes, representing different degrees of positive and negative sentiment intensity, that most accurately reflects the emotional state of the Twitter user. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ',
    'Task: Classify the tweet into one of seven ordinal classes, corresponding to various levels of positive and negative sentiment intensity, that best represents the mental state of the tweeter. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ',
    "Task: Assign the tweet to a specific ordinal class that corresponds to the tweeter's mental state, considering various levels of positive and negative sentiment intensity. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ",
    "Task: Categorize the tweet into an ordinal class that best characterizes the tweeter's mental state, considering various degrees of positive and negative sentiment intensity. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ",
    "Task: Place the tweet into a specific ordinal class, which captures the tweeter's mental state by considering different levels of positive and negative sentiment intensity. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ",
    'Task: Classify the tweet into one of seven ordinal categories, indicating the intensity of positive or negative sentiment expressed by the tweeter and reflecting their current mental state. 3: very positive mental state can be inferred. 2: moderately positive mental state can be inferred. 1: slightly positive mental state can be inferred. 0: neutral or mixed mental state can be inferred. -1: slightly negative mental state can be inferred. -2: moderately negative mental state can be inferred. -3: very negative mental state can be inferred Tweet: {text} Intensity Class: ',
)

_V_REG_TEMPLATES = (
    'Task: Quantify the sentiment intensity or valence level of the tweet, giving it a score between 0 (highly negative) and 1 (highly positive). Tweet: {text} Intensity Score: ',
    "Task: Evaluate the valence intensity of the tweeter's mental state based on the tweet, assigning it a real-valued score from 0 (most negative) to 1 (most positive). Tweet: {text} Intensity Score: ",
    'Task: Measure the intensity of sentiment or valence in the tweet, assigning it a score between 0 (highly negative) and 1 (highly positive). Tweet: {text} Intensity Score: ',
    'Task: Calculate the sentiment intensity or valence score of the tweet, which should be a real number between 0 (extremely negative) and 1 (extremely positive). Tweet: {text} Intensity Score: ',
    "Task: Determine the sentiment intensity or valence score of the tweet, representing the tweeter's mental state on a continuum from 0 (highly negative) to 1 (highly positive). Tweet: {text} Intensity Score: ",
    'Task: Gauge the intensity of sentiment or valence in the tweet, indicating a numerical value between 0 (extremely negative) and 1 (extremely positive). Tweet: {text} Intensity Score: ',
    "Task: Determine the valence intensity of the tweeter's mental state on a scale of 0 (most negative) to 1 (most positive). Tweet: {text} Intensity Score: ",
    "Task: Assess the intensity of sentiment or valence in the tweet, representing the tweeter's mental state with a real-valued score between 0 (extremely negative) and 1 (extremely positive). Tweet: {text} Intensity Score: ",
    'Task: Assess the sentiment intensity or valence level of the tweet, ranging from 0 (extremely negative) to 1 (extremely positive). Tweet: {text} Intensity Score: ',
    "Task: Rate the valence intensity of the tweeter's mental state expressed in the tweet, assigning it a score on a scale of 0 (most negative) to 1 (most positive). Tweet: {text} Intensity Score: ",
)

_EI_OC_TEMPLATES = (
    'Task: Assign one of four ordinal intensity classes of emotion E to a given tweet based on the emotional state of the user. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ',
    "Task: Classify the tweet's emotional intensity into one of four ordinal levels of emotion E, providing insights into the mental state of the user. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ",
    'Task: Determine the appropriate intensity category of emotion E for the tweet, reflecting the emotional state of the user. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ',
    'Task: Classify the tweet into one of four ordinal classes of intensity of emotion E that best represents the mental state of the tweeter. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ',
    'Task: Categorize the tweet into an intensity level of the specified emotion E, representing the mental state of the tweeter. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ',
    "Task: Place the tweet into a specific intensity class, reflecting the intensity of the mentioned emotion E and the user's mental state. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ",
    'Task: Classify the tweet into one of four ordinal intensity levels, indicating the degree of emotion E experienced by the tweeter. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ',
    "Task: Categorize the tweet based on the intensity of the specified emotion E, capturing the tweeter's mental state. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ",
    'Task: Assign a suitable level of intensity of emotion E to the tweet, representing the emotional state of the tweeter. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ',
    'Task: Determine the appropriate intensity class for the tweet, reflecting the level of emotion E experienced by the user. 0: no E can be inferred. 1: low amount of E can be inferred. 2: moderate amount of E can be inferred. 3: high amount of E can be inferred. Tweet: {text} Emotion E: {target}. Intensity Class: ',
)


_EI_OC_CLASSES = {0: "no", 1: "low", 2: "moderate", 3: "high"}
_V_OC_CLASSES = {
    3: "very positive",
    2: "moderately positive",
    1: "slightly positive",
    0: "neutral or mixed",
    -1: "slightly negative",
    -2: "moderately negative",
    -3: "very negative",
}
_SEMEVAL_EMOTIONS = (
    "anger", "anticipation", "disgust", "fear", "joy", "love",
    "optimism", "pessimism", "sadness", "surprise", "trust",
)
_GOEMOTIONS = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
_EMOBANK = "Task: Determine the {dim} intensity of the writer's mental state on a scale of 1 ({low}) to 5 ({high}). Text: {{text}} Intensity Score: "


PEARSON = ("pearson",)
CLASSES = ("accuracy", "macro_f1")
SETS = ("jaccard", "micro_f1", "macro_f1")


def _emobank(dim: str, low: str, high: str) -> Task:
    return Task(
        name=f"emobank_{dim[0]}", family="emobank",
        description=f"EmoBank {dim} in [1, 5] (AEB, out of domain)",
        templates=(_EMOBANK.format(dim=dim, low=low, high=high),),
        answer=Regression(1, 5, decimals=2), metrics=PEARSON, source="emobank_test.csv",
    )


_ALL = [
    Task(
        name="ei_reg", family="EI-reg",
        description="intensity of emotion E in [0, 1] (SemEval-2018 EI-reg)",
        templates=_EI_REG_TEMPLATES, targets=EI_EMOTIONS,
        answer=Regression(0, 1), metrics=PEARSON, source="aaid",
        column="{target}_intensity",
    ),
    Task(
        name="ei_oc", family="EI-oc",
        description="ordinal intensity class 0..3 of emotion E (SemEval-2018 EI-oc)",
        templates=_EI_OC_TEMPLATES, targets=EI_EMOTIONS,
        answer=Ordinal(_EI_OC_CLASSES), metrics=PEARSON, source="aaid",
        column="{target}_intensity_class",
    ),
    Task(
        name="v_reg", family="V-reg",
        description="valence intensity in [0, 1] (SemEval-2018 V-reg)",
        templates=_V_REG_TEMPLATES,
        answer=Regression(0, 1), metrics=PEARSON, source="aaid",
        column="valence",
    ),
    Task(
        name="v_oc", family="V-oc",
        description="ordinal valence class -3..3 (SemEval-2018 V-oc)",
        templates=_V_OC_TEMPLATES,
        answer=Ordinal(_V_OC_CLASSES), metrics=PEARSON, source="aaid",
        column="valence_class",
    ),
    Task(
        name="e_c", family="E-c",
        description="neutral or a set of 11 emotions (SemEval-2018 E-c)",
        templates=_E_C_TEMPLATES,
        answer=MultiLabel(_SEMEVAL_EMOTIONS, neutral_answer="neutral or no emotion", terminator="."),
        metrics=SETS, source="aaid",
        column="emotions",
    ),
    Task(
        name="sst", family="sst",
        description="sentiment score in [0, 1] (SST, AEB, out of domain)",
        templates=("Task: Calculate the sentiment score of the text, which should be a real number between 0 (extremely negative) and 1 (extremely positive). Text: {text} Sentiment score: ",),
        answer=Regression(0, 1, decimals=5), metrics=PEARSON, source="SST_test.csv",
    ),
    Task(
        name="sst5", family="sst5",
        description="5-class sentiment 0..4 (SST-5, AEB, out of domain)",
        templates=("Task: Classify the text into one of five classes of sentiment that best represents the mental state of the text. 0: very negative, 1: negative, 2: neutral, 3: positive, 4: very positive. Text: {text} Sentiment Class: ",),
        answer=Ordinal({0: "very negative", 1: "negative", 2: "neutral", 3: "positive", 4: "very positive"}),
        metrics=CLASSES, source="sst5_test.csv",
    ),
    Task(
        name="tdt", family="tdt",
        description="3-class ordinal sentiment -1..1 (TDT, AEB, out of domain)",
        templates=("Task: Classify the text into one of three ordinal categories, indicating the intensity of positive or negative sentiment expressed by the writer and reflecting their current mental state. 1: positive. 0: neutral. -1: negative. Text: {text} Intensity Class: ",),
        answer=Ordinal({1: "positive", 0: "neutral", -1: "negative"}),
        metrics=CLASSES, source="TDT.csv",
    ),
    _emobank("valence", "most negative", "most positive"),
    _emobank("arousal", "most calm", "most excited"),
    _emobank("dominance", "most being controlled", "most being in control"),
    Task(
        name="vader", family="vader",
        description="valence in [-4, 4] (VADER, AEB, out of domain)",
        templates=("Task: Calculate the sentiment intensity or valence score of the text, which should be a real number between -4 (extremely negative) and 4 (extremely positive). Text: {text} Intensity Score: ",),
        answer=Regression(-4, 4, decimals=2), metrics=PEARSON, source="vader_test.csv",
    ),
    Task(
        name="goemotions", family="goemotions",
        description="neutral and/or 6 emotions (GoEmotions, AEB, out of domain)",
        templates=("Task: Categorize the text's emotional expression, classifying it as either 'neutral' or as one or more of the specified emotions (anger, disgust, fear, joy, sadness, surprise) that reflect the writer's state of mind. Text: {text} This tweet contains emotions: ",),
        answer=MultiLabel(_GOEMOTIONS, combinable_neutral=True),
        metrics=SETS, source="goemotion_test.csv",
    ),
]

TASKS: dict[str, Task] = {t.name: t for t in _ALL}


@dataclass(frozen=True)
class TaskRequest:
    """One (task, target) pair to annotate every row with."""

    task: Task
    target: str | None = None

    @property
    def key(self) -> str:
        return request_key(self.task.name, self.target)


def request_key(task: str, target: str | None) -> str:
    """The one written form of a task request: `v_reg`, `ei_reg:joy`."""
    return f"{task}:{target}" if target else task


def split_key(key: str) -> tuple[str, str | None]:
    """(task name, target or None) of a request key (`request_key`'s inverse)."""
    name, _, target = key.partition(":")
    return name, target or None


def resolve(spec: list[str] | str) -> list[TaskRequest]:
    """Turn `["v_reg", "ei_reg", "ei_oc:joy"]` into task requests; a targeted task without a
    target means all its targets. Unknown names raise with the list of known ones."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[TaskRequest] = []
    for item in (n.strip() for n in names if n.strip()):
        name, target = split_key(item)
        if name not in TASKS:
            raise ConfigError(f"unknown task {name!r}: pick from {', '.join(TASKS)} "
                              "(`emoray tasks` describes each)")
        task = TASKS[name]
        if target and target not in task.targets:
            known = ", ".join(task.targets) or "none"
            raise ConfigError(f"task {name!r} has no target {target!r}: pick from {known}")
        for t in [target] if target else (task.targets or [None]):
            request = TaskRequest(task, t)
            if request not in out:
                out.append(request)
    if not out:
        raise ConfigError(f"no tasks given: pick from {', '.join(TASKS)}")
    return out


def request_order(key: str) -> tuple[int, int]:
    """Sort key of a request key (`v_reg`, `ei_reg:joy`): catalog order, a targeted task's
    bare name before its targets."""
    name, target = split_key(key)
    return list(TASKS).index(name), TASKS[name].targets.index(target) + 1 if target else 0
