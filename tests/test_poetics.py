"""The form of a 五言绝句: tones, rhymes and features on hand-made poems of known form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from course_lib import poetics, preference, rnn
from course_lib.poetics import LEVEL, OBLIQUE, UNKNOWN

DENG = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"  # 登鹳雀楼: 仄起, perfect form
JINGYE = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"  # 静夜思: rhymes, repeats 明月头
JIANGXUE = "千山鸟飞绝，万径人踪灭。孤舟蓑笠翁，独钓寒江雪。"  # 江雪: rhymes on oblique tones
POLYPHONES = "看山思行长，重水看花长。千里行人去，思君看月长。"  # 看 思 行 长 重, read alone
FEATURE = {name: i for i, name in enumerate(poetics.FEATURES)}


def group(char):
    return poetics.RHYME_NAMES[poetics.rhyme_group(char)]


def pypinyin_features(poem):
    """The features with pypinyin's raw Mandarin tones, i.e. without the entering-tone fix."""
    tones = np.array([[poetics.pypinyin_tone_class(c) for c in poem]], np.int32)
    _, rhymes = poetics.char_codes(poem)
    chars = np.array([[ord(c) for c in poem]], np.int32)
    return np.asarray(poetics.features(chars, tones, rhymes[None], np.array([True])))[0]


# --- known poems -------------------------------------------------------------------------------


def test_deng_guan_que_lou_is_a_perfect_ze_qi_quatrain():
    d = poetics.describe(DENG)
    assert {k: d[k] for k in poetics.FEATURES} == {
        "form_ok": 1.0,
        "rhyme_2_4": 1.0,
        "level_rhyme": 1.0,
        "first_line_ok": 1.0,
        "third_line_oblique": 1.0,
        "tone_pattern": 1.0,
        "repeats": 0.0,
    }
    assert d["line_ends"] == "尽流目楼"
    assert d["end_tones"] == "仄平仄平"
    assert d["end_rhymes"] == "文 尤 姑 尤"


def test_jing_ye_si_rhymes_but_repeats_and_strays_from_the_tones():
    d = poetics.describe(JINGYE)
    assert d["rhyme_2_4"] == d["level_rhyme"] == d["first_line_ok"] == 1.0
    assert d["end_rhymes"] == "唐 唐 皆 唐"  # 光 霜 乡 in 唐
    assert d["repeats"] == 3.0  # 明 月 头 each a second time
    assert 0.5 < d["tone_pattern"] < 1.0
    assert d["tone_pattern"] == pytest.approx(10 / 12, abs=1e-3)


def test_jiang_xue_rhymes_on_oblique_tones():
    d = poetics.describe(JIANGXUE)
    assert d["rhyme_2_4"] == 1.0 and d["level_rhyme"] == 0.0  # 灭 雪: 仄韵
    assert d["end_tones"] == "仄仄平仄"
    assert d["third_line_oblique"] == 0.0  # 翁 is level
    assert d["repeats"] == 0.0


def test_repeats_count_characters_beyond_their_first_use():
    thrice = "白日依山尽，黄河入海流。欲穷千里目，更上一山山。"  # 山 three times
    assert poetics.poem_features([thrice])[0, FEATURE["repeats"]] == 2.0
    assert poetics.poem_features([DENG])[0, FEATURE["repeats"]] == 0.0


def test_templates_follow_the_rules_of_regulated_verse():
    for template in poetics.TEMPLATES:
        lines = template.split()
        assert len(lines) == 4 and all(len(line) == 5 for line in lines)
        assert lines[1][4] == lines[3][4] == "P" and lines[2][4] == "Z"  # 平韵, 3rd line 仄
        assert lines[0][1] != lines[1][1] and lines[2][1] != lines[3][1]  # 对
        assert lines[1][1] == lines[2][1]  # 粘
    assert poetics._TEMPLATE_TONES.shape == (4, 12)
    assert set(np.unique(poetics._TEMPLATE_TONES)) == {LEVEL, OBLIQUE}


# --- the entering tone (入声) -------------------------------------------------------------------


def test_pypinyin_reads_every_entering_tone_character_level_and_tone_class_fixes_it():
    wrong = [c for c in poetics.ENTERING_TONE if poetics.pypinyin_tone_class(c) != LEVEL]
    assert wrong == [], f"pypinyin does not read these level, drop them: {''.join(wrong)}"
    assert all(poetics.tone_class(c) == OBLIQUE for c in poetics.ENTERING_TONE)
    for char in "白一国十石":
        assert char in poetics.ENTERING_TONE
        assert poetics.pypinyin_tone_class(char) == LEVEL
        assert poetics.tone_class(char) == OBLIQUE
    # characters outside the list keep pypinyin's class
    assert poetics.tone_class("山") == LEVEL and poetics.tone_class("日") == OBLIQUE


def test_entering_tone_changes_the_score_of_a_poem():
    # 石 at a checked position (line 1, 2nd character) and 国 at the end of line 3: both 仄 in
    # Tang prosody, as the template wants; pypinyin's Mandarin reads them level.
    poem = "青石临江尽，黄河入海流。欲穷千里国，更上一层楼。"
    ours, raw = poetics.poem_features([poem])[0], pypinyin_features(poem)
    assert ours[FEATURE["tone_pattern"]] == 1.0 and ours[FEATURE["third_line_oblique"]] == 1.0
    assert raw[FEATURE["tone_pattern"]] < 1.0 and raw[FEATURE["third_line_oblique"]] == 0.0
    # without entering-tone characters the two readings agree
    np.testing.assert_array_equal(poetics.poem_features([DENG])[0], pypinyin_features(DENG))


# --- rhyme groups -------------------------------------------------------------------------------


def test_rhyme_groups_are_modern_not_pingshui():
    assert group("花") == group("家") == "麻"
    assert group("斜") != group("家")  # 平水韵 rhymes them (麻); 中华新韵 does not: documented
    assert (group("知"), group("衣")) == ("支", "齐")  # zhi is not yi
    assert group("思") == "支" and group("西") == "齐"
    assert group("乡") == group("霜") == "唐"
    assert len(poetics.RHYME_NAMES) == 15 and poetics.RHYME_NAMES[0] == ""


# --- odd input ----------------------------------------------------------------------------------


def test_polyphones_are_read_alone_without_crashing():
    # Read alone: 看 kàn (仄, though poems often need kān) and 思 sī, 行 xíng level.
    assert poetics.tone_class("看") == OBLIQUE
    assert poetics.tone_class("思") == poetics.tone_class("行") == LEVEL
    assert {poetics.tone_class(c) for c in "长重"} <= {LEVEL, OBLIQUE}
    feats = poetics.poem_features([POLYPHONES])[0]
    assert feats[FEATURE["form_ok"]] == 1.0 and feats[FEATURE["rhyme_2_4"]] == 1.0  # 长 长
    assert np.isfinite(feats).all() and 0.0 <= feats[FEATURE["tone_pattern"]] <= 1.0
    assert poetics.describe(POLYPHONES)["line_ends"] == "长长去长"


def test_non_han_characters_have_no_tone_and_no_rhyme():
    for char in ["a", "Z", "7", "😀", "，", " ", "㐀"]:  # 㐀: extension A, outside the range
        assert poetics.tone_class(char) == poetics.pypinyin_tone_class(char) == UNKNOWN
        assert poetics.rhyme_group(char) == 0
    tones, rhymes = poetics.char_codes([rnn.BOS, rnn.UNK, rnn.EOS, "山", "x"])
    np.testing.assert_array_equal(tones, [UNKNOWN, UNKNOWN, UNKNOWN, LEVEL, UNKNOWN])
    np.testing.assert_array_equal(rhymes[[0, 1, 2, 4]], 0)
    assert tones.dtype == rhymes.dtype == np.int32


def test_rare_character_without_a_reading_does_not_crash():
    rare = "兙"  # a Han character pypinyin has no reading for
    assert poetics.tone_class(rare) == UNKNOWN and poetics.rhyme_group(rare) == 0
    poem = DENG.replace("流", rare)  # the end of line 2 no longer rhymes with anything
    feats = poetics.poem_features([poem])[0]
    assert feats[FEATURE["form_ok"]] == 1.0
    assert feats[FEATURE["rhyme_2_4"]] == feats[FEATURE["level_rhyme"]] == 0.0
    assert poetics.describe(poem)["end_rhymes"] == "文 - 姑 尤"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "白日依山尽，黄河入海流。",  # two lines
        DENG + "白",  # too long
        DENG.replace("，", "。"),  # wrong punctuation
        DENG.replace("白日", "ab"),  # Latin letters
        DENG.replace("白日", "12"),  # digits
        DENG.replace("白", "😀"),  # an emoji
    ],
)
def test_non_quatrains_get_all_zero_features(text):
    assert not poetics.is_quatrain(text)
    assert poetics.is_quatrain(text) == rnn.is_quatrain(text)
    feats = poetics.poem_features([text])
    assert feats.shape == (1, len(poetics.FEATURES))
    np.testing.assert_array_equal(feats, 0.0)


def test_poem_features_of_a_batch():
    assert poetics.poem_features([]).shape == (0, 7)
    feats = poetics.poem_features([DENG, "not a poem", JINGYE])
    assert feats.shape == (3, 7) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats[0], poetics.poem_features([DENG])[0])
    np.testing.assert_array_equal(feats[1], 0.0)
    assert poetics.is_quatrain(DENG) and rnn.is_quatrain(DENG)


# --- on token ids, as the sampler gives them ----------------------------------------------------


def test_features_on_ids_equal_features_on_strings():
    poems = [DENG, JINGYE, JIANGXUE, POLYPHONES]
    vocab = rnn.CharVocab(poems)
    table = preference.PoemTable.for_vocab(vocab)
    eos = vocab.stoi[rnn.EOS]
    ids = np.stack([np.append(vocab.encode(p), eos) for p in poems])  # [4, 25] as sampled
    features = jax.jit(preference.poem_features)  # one compilation, not one per eager op
    on_ids = np.asarray(features(jnp.asarray(ids), table))
    np.testing.assert_array_equal(on_ids, poetics.poem_features(poems))
    assert on_ids[:, FEATURE["form_ok"]].tolist() == [1.0] * 4

    broken = ids[:3].copy()
    broken[0, 12] = eos  # the poem ends after two lines
    broken[1, 24] = vocab.stoi["山"]  # no end after the fourth line
    broken[2, 3] = vocab.stoi[rnn.UNK]  # an unknown character
    np.testing.assert_array_equal(np.asarray(features(jnp.asarray(broken), table)), 0.0)
    ok = jax.jit(preference.form_ok)(jnp.asarray(np.concatenate([broken, ids])), table)
    assert np.asarray(ok).tolist() == [False] * 3 + [True] * 4
