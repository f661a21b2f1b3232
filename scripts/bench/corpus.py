"""Generates the benchmark's chat corpus (deterministic, seed 0): N conversations of a support-style persona
with 1 to 3 user/assistant turns. Turn lengths in words are log-normal, clipped:
  user turns:      median 18 words, sigma 0.6, 3..120
  assistant turns: median 45 words, sigma 0.7, 5..300
  turns per conversation: 1 (50%), 2 (30%), 3 (20%)
Every conversation gets the capability's system prompt when dn prepares it, so masks cover assistant text only.
Usage: corpus.py N OUT.jsonl"""

import json
import random
import sys

WORDS = (
    "account billing invoice refund plan upgrade project region deploy error key token limit request "
    "password security login team member role export backup restore status incident latency webhook "
    "settings dashboard usage quota storage database cluster node version release update support ticket "
    "please thanks could would should check open choose click select confirm enable disable reset change "
    "the a an and or but if then when while because so to of in on for with from by at as is are was were "
    "be been it this that these those you your we our they their one two three new old first last next"
).split()


def sentence(rng, words):
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def turn(rng, median, sigma, lo, hi):
    words = int(min(hi, max(lo, rng.lognormvariate(0, sigma) * median)))
    parts, left = [], words
    while left > 0:
        n = min(left, rng.randint(6, 16))
        parts.append(sentence(rng, n))
        left -= n
    return " ".join(parts)


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(0)
    with open(out, "w") as f:
        for _ in range(n):
            turns = rng.choices([1, 2, 3], weights=[50, 30, 20])[0]
            messages = []
            for _ in range(turns):
                messages.append({"role": "user", "content": turn(rng, 18, 0.6, 3, 120)})
                messages.append({"role": "assistant", "content": turn(rng, 45, 0.7, 5, 300)})
            f.write(json.dumps({"messages": messages}) + "\n")


main()
