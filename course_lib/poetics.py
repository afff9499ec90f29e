"""The form of a five-character quatrain (五言绝句): rhyme, level and oblique tones, features.

Taught in chapter 6.5 (06c_feedback_lab), where a simulated reader rates the chapter-5 poems by
their form and a reward model learns that reader's taste from comparisons.

Sounds come from ``pypinyin``, which reads *modern Mandarin*. Three places where that is wrong for
Tang poetry, each handled or documented here:

- **入声 (entering tone).** Middle Chinese syllables ending in -p, -t, -k were 仄 (oblique).
  Mandarin lost the endings and spread these characters over all four tones, so pypinyin
  reads many as tone 1 or 2, that is 平 (level): 白, 一, 国, 十, 石 ... :data:`ENTERING_TONE`
  lists the common ones that Mandarin reads level; :func:`tone_class` reads them 仄.
- **Rhyme.** The rhyme groups here are the 14 of 中华新韵 (modern finals), not the 106 of 平水韵
  that Tang poets used. So 斜 (xie) and 家 (jia), a rhyme in 平水韵's 麻 group, do not rhyme here.
- **Polyphones.** A character is read alone, with its most common reading: 看 is kàn (仄), though
  poems often need kān (平); 思 is sī, not the noun sì. Reading characters alone keeps one reading
  per vocabulary entry, so the jitted :func:`features` and the rater agree.

Positions in a quatrain string ``xxxxx，xxxxx。xxxxx，xxxxx。`` (24 characters): line ``i`` (0..3),
character ``j`` (0..4) sits at ``6 * i + j``; the line ends at 4, 10, 16, 22.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

UNKNOWN, LEVEL, OBLIQUE = 0, 1, 2  # tone classes: not a Han character, 平, 仄
PUNCTUATION = "，。，。"
LINE_CHARS = np.array([6 * i + j for i in range(4) for j in range(5)])  # the 20 characters
LINE_ENDS = np.array([4, 10, 16, 22])
POEM_LENGTH = 24

# Common characters of the entering tone (入声) that Mandarin (and pypinyin) reads in tone 1 or
# 2, i.e. level; in Tang prosody they are oblique. tests/test_poetics.py checks that pypinyin
# reads every one of them level, so this is exactly a list of its errors.
ENTERING_TONE = frozenset(
    "一七八十出吃黑发说德得格隔革阁国节结洁杰急集级极及吉即疾籍激击积夹接揭劫菊局橘觉决绝爵"
    "哭福服伏幅拂佛达答读独毒笛敌滴叠蝶跌合盒核滑活竭杂贼则择泽责宅昨足族卒叔淑熟俗赎识实"
    "拾食蚀失湿石什舌伯薄白帛别逼拨剥泼仆扑学削薛锡夕息惜昔析席袭习媳侠匣峡狭歇协胁挟鸭押压"
    "约屋捉拙卓琢浊灼酌折哲扎职直值植殖执汁织竹烛逐轴督突秃托脱夺插察擦杀刷刮割鸽缺熄悉膝"
    "漆戚勃博驳泊舶搏屈鞠额忽窟涤迪狄荻汐檄吸揖壹"
)

# The 14 rhyme groups of 中华新韵, by pypinyin's strict finals ("v" is ü).
RHYME_GROUPS = {
    "麻": ("a", "ia", "ua"),
    "波": ("o", "e", "uo"),
    "皆": ("ie", "ve"),
    "开": ("ai", "uai"),
    "微": ("ei", "uei"),
    "豪": ("ao", "iao"),
    "尤": ("ou", "iou"),
    "寒": ("an", "ian", "uan", "van"),
    "文": ("en", "in", "uen", "vn"),
    "唐": ("ang", "iang", "uang"),
    "庚": ("eng", "ing", "ong", "iong", "ueng"),
    "齐": ("i", "er", "v"),
    "支": ("-i",),  # -i: the i after zh ch sh r z c s (知, 思)
    "姑": ("u",),
}
RHYME_NAMES = ("", *RHYME_GROUPS)  # id 0: no rhyme (not a Han character)
_GROUP_OF_FINAL = {f: i for i, g in enumerate(RHYME_GROUPS.values(), 1) for f in g}
_BUZZ_INITIALS = ("zh", "ch", "sh", "r", "z", "c", "s")

# The four tone patterns of a 五言绝句 (P 平, Z 仄), lines 1-4: 仄起 / 平起, first line rhyming or
# not. The 1st and 3rd characters of a line are free (一三五不论); the 2nd, 4th and 5th are checked.
TEMPLATES = (
    "ZZPPZ PPZZP PPPZZ ZZZPP",  # 仄起，首句不入韵
    "ZZZPP PPZZP PPPZZ ZZZPP",  # 仄起，首句入韵
    "PPPZZ ZZZPP ZZPPZ PPZZP",  # 平起，首句不入韵
    "PPZZP ZZZPP ZZPPZ PPZZP",  # 平起，首句入韵
)
CHECKED = np.array([6 * i + j for i in range(4) for j in (1, 3, 4)])  # 12 checked positions
_TEMPLATE_TONES = np.array(
    [
        [{"P": LEVEL, "Z": OBLIQUE}[t.replace(" ", "")[5 * (p // 6) + p % 6]] for p in CHECKED]
        for t in TEMPLATES
    ]
)

FEATURES = (
    "form_ok",  # exactly four lines of five Han characters, with ，。，。
    "rhyme_2_4",  # the ends of lines 2 and 4 share a rhyme group
    "level_rhyme",  # the ends of lines 2 and 4 are both level (平韵)
    "first_line_ok",  # line 1 ends level in the rhyme, or oblique (首句入韵 or not)
    "third_line_oblique",  # line 3 ends oblique
    "tone_pattern",  # share of the 12 checked positions that follow the best of TEMPLATES
    "repeats",  # characters used more than once: 20 minus the number of distinct ones
)


def _reading(char: str) -> tuple[int, str, str]:
    from pypinyin import Style, lazy_pinyin

    syllable = lazy_pinyin(char, style=Style.TONE3, neutral_tone_with_five=True, errors="ignore")
    if not syllable or not syllable[0][-1:].isdigit():
        return 0, "", ""
    final = lazy_pinyin(char, style=Style.FINALS, strict=True)[0]
    initial = lazy_pinyin(char, style=Style.INITIALS, strict=True)[0]
    return int(syllable[0][-1]), initial, final


@functools.cache
def pypinyin_tone_class(char: str) -> int:
    """平 or 仄 as pypinyin's Mandarin reading says: tones 1 and 2 level, 3, 4 and the neutral
    tone (5: 的 read alone is de5) oblique."""
    tone = _reading(char)[0]
    if tone == 0 or not "\u4e00" <= char <= "\u9fff":
        return UNKNOWN
    return LEVEL if tone in (1, 2) else OBLIQUE


@functools.cache
def tone_class(char: str) -> int:
    """LEVEL (平), OBLIQUE (仄) or UNKNOWN: pypinyin's reading, with the entering tone fixed."""
    tone = pypinyin_tone_class(char)
    return OBLIQUE if tone == LEVEL and char in ENTERING_TONE else tone


@functools.cache
def rhyme_group(char: str) -> int:
    """The id of the character's rhyme group in :data:`RHYME_NAMES` (0: none)."""
    if not "\u4e00" <= char <= "\u9fff":
        return 0
    _, initial, final = _reading(char)
    if final == "i" and initial in _BUZZ_INITIALS:
        final = "-i"
    return _GROUP_OF_FINAL.get(final, 0)


def char_codes(chars) -> tuple[np.ndarray, np.ndarray]:
    """``(tones, rhymes)`` int32 arrays for a sequence of characters (a string or a vocabulary)."""
    chars = [c if len(c) == 1 else "" for c in chars]  # special tokens such as <bos> read as none
    tones = np.array([tone_class(c) if c else UNKNOWN for c in chars], np.int32)
    rhymes = np.array([rhyme_group(c) if c else 0 for c in chars], np.int32)
    return tones, rhymes


@jax.jit
def features(chars, tones, rhymes, form_ok):
    """The :data:`FEATURES` of a batch of poems, [B, 7] float32, from their first 24 positions.

    ``chars`` [B, >=24] identifies characters (any integer code), ``tones`` and ``rhymes`` are
    their :func:`char_codes`, ``form_ok`` [B] whether each is a quatrain. Every feature of a poem
    that is not a quatrain is 0.
    """
    chars, tones, rhymes = chars[:, :POEM_LENGTH], tones[:, :POEM_LENGTH], rhymes[:, :POEM_LENGTH]
    end_tone, end_rhyme = tones[:, LINE_ENDS], rhymes[:, LINE_ENDS]
    rhyme_2_4 = (end_rhyme[:, 1] == end_rhyme[:, 3]) & (end_rhyme[:, 1] > 0)
    level_rhyme = (end_tone[:, 1] == LEVEL) & (end_tone[:, 3] == LEVEL)
    first_rhymes = (end_rhyme[:, 0] == end_rhyme[:, 1]) & (end_tone[:, 0] == LEVEL)
    first_line_ok = first_rhymes | (end_tone[:, 0] == OBLIQUE)
    third_line_oblique = end_tone[:, 2] == OBLIQUE
    agree = tones[:, CHECKED][:, None, :] == jnp.asarray(_TEMPLATE_TONES)[None]
    tone_pattern = agree.mean(-1).max(-1)
    line = chars[:, LINE_CHARS]
    same = line[:, :, None] == line[:, None, :]
    first_use = ~jnp.any(jnp.tril(same, k=-1), axis=-1)  # no earlier position has this character
    repeats = LINE_CHARS.size - first_use.sum(-1)
    values = jnp.stack(
        [
            jnp.ones_like(tone_pattern),
            rhyme_2_4,
            level_rhyme,
            first_line_ok,
            third_line_oblique,
            tone_pattern,
            repeats,
        ],
        axis=-1,
    ).astype(jnp.float32)
    return values * jnp.asarray(form_ok, jnp.float32)[:, None]


def is_quatrain(text: str) -> bool:
    """Exactly ``xxxxx，xxxxx。xxxxx，xxxxx。`` with Han characters (as ``rnn.is_quatrain``)."""
    return (
        len(text) == POEM_LENGTH
        and all("\u4e00" <= text[p] <= "\u9fff" for p in LINE_CHARS)
        and "".join(text[p + 1] for p in LINE_ENDS) == PUNCTUATION
    )


def poem_features(poems) -> np.ndarray:
    """:func:`features` of poems given as strings (any length; non-quatrains get zeros)."""
    padded = [(p + " " * POEM_LENGTH)[:POEM_LENGTH] for p in poems]
    if not padded:
        return np.zeros((0, len(FEATURES)), np.float32)
    codes = [char_codes(p) for p in padded]
    chars = np.array([[ord(c) for c in p] for p in padded], np.int32)
    tones = np.stack([t for t, _ in codes])
    rhymes = np.stack([r for _, r in codes])
    ok = np.array([is_quatrain(p) for p in poems])
    return np.asarray(features(chars, tones, rhymes, ok))


def describe(poem: str) -> dict:
    """What a reader of form sees in one poem: the features by name, and each line-end's sound."""
    values = poem_features([poem])[0]
    ends = [poem[p] for p in LINE_ENDS if p < len(poem)]
    return {
        **{name: round(float(v), 3) for name, v in zip(FEATURES, values, strict=True)},
        "line_ends": "".join(ends),
        "end_tones": "".join("?平仄"[tone_class(c)] for c in ends),
        "end_rhymes": " ".join(RHYME_NAMES[rhyme_group(c)] or "-" for c in ends),
    }
