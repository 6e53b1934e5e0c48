"""Text-only fluency (revrel.metrics.text): n-gram entropy, ROME's weights."""

import math

from revrel.metrics.text import ngram_entropy


def test_ngram_entropy_of_distinct_words_is_the_weighted_log_of_the_ngram_counts():
    # 4 words: 3 distinct bigrams (log2 3 bits), 2 distinct trigrams (1 bit); weights 2/3 and 4/3, mean of the two
    assert math.isclose(ngram_entropy("a b c d"), (2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("A b C d") == ngram_entropy("a b c d")  # case does not count
    assert ngram_entropy("one") == 0.0 and ngram_entropy("") == 0.0


def test_a_looping_or_stuttering_answer_scores_below_a_fluent_one_of_the_same_length():
    fluent = "The physicist who changed physics was born in Ulm and later worked on light, gravity and time in Berlin."
    loop = "The physicist's physicist, the physicist's physicist's physicist, is the physicist's physicist's physicist."
    stutter = "A.A.A.A.A.A.A.A.A.A.A.A.A.A.A.A.A.A.A.A."
    assert ngram_entropy(loop) < ngram_entropy(fluent) - 1.0
    assert ngram_entropy(stutter) < ngram_entropy(fluent) - 2.0
