"""The peer's best case: COUNT sequences of LEN random token ids (20..VOCAB-1, VOCAB 49152 by default),
every token supervised. Usage: random_examples.py COUNT LEN OUT.jsonl [VOCAB]"""
import json
import random
import sys

count, length, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
vocab = int(sys.argv[4]) if len(sys.argv) > 4 else 49152
rng = random.Random(0)
with open(out, "w") as f:
    for _ in range(count):
        f.write(json.dumps({"input_ids": [rng.randrange(20, vocab) for _ in range(length)], "loss_mask": [1] * length}) + "\n")
