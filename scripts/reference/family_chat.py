"""Token and loss-mask parity cases for each family's chat template (scripts/reference/templates/, written
for dn's tests after the real ones' quirks) with the tiny models' tokenizer, loaded by transformers 5 from
the model directory (chat_template.jinja, generation_config.json).

The token ids are transformers' `apply_chat_template(tokenize=True)`. The masks follow dn's documented
rules, implemented here independently of dn:
  - the capability's system prompt is prepended as a system message (or merged into an existing first
    one as prompt + blank line + content);
  - a template that raises on a system message gets it in front of the first user message followed by a
    blank line; one that leaves it out of a conversation ending with the assistant gets it removed;
  - an assistant message is supervised from the end of the prompt for it (the render of the messages
    before it with the generation prompt) through the first end-of-turn token (the tokenizer's eos token
    or an eos id of generation_config.json) after its content; with the content copied verbatim right
    after the generation prompt, read off one render (first end-of-turn after the content; a template that
    raises on the marked contents goes to the next rule); otherwise from
    prefix renders, which must be prefixes of the full render (else one example per assistant turn);
  - a token is supervised when it starts inside a supervised span.

Writes tests/fixtures/families/<family>/chat_parity.json."""

import datetime
import json
import pathlib
import sys

import jinja2
import transformers
import transformers.utils.chat_template_utils as chat_utils
from transformers import AutoTokenizer, GenerationConfig

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from chat_cases import a, as_template_reads, call, s, scaffold, u  # noqa: E402
from family_specs import FAMILIES, TEMPLATE_DATE  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "families"


class FixedDate(datetime.datetime):
    """strftime_now renders TEMPLATE_DATE (dn's tests pin the template clock to it)."""

    @classmethod
    def now(cls, tz=None):
        return cls(*TEMPLATE_DATE, 10, 0, 0)


chat_utils.datetime = FixedDate


PROMPT = "You are the support agent of Acme Cloud."
CASES = [
    ("single_turn", [u("What is 2+2?"), a("4")], None),
    ("multi_turn", [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke."), a("Why did the chicken cross the road?"), u("Why?"), a("To get to the other side.")], None),
    ("capability", [u("My deploy failed with error E42."), a("E42 means the image is over 2 GB.")], PROMPT),
    ("capability_multi_turn", [s("Answer briefly."), u("Rotate a key?"), a("Settings, then Rotate."), u("And the old key?"), a("It works for 24 hours.")], PROMPT),
    ("reasoning", [u("Is 17 prime?"), a("<think>17 has no divisors but 1 and 17.</think>\nYes, 17 is prime.")], PROMPT),
    ("reasoning_field", [u("Is 17 prime?"), a("Yes, 17 is prime.", reasoning_content="17 has no divisors but 1 and 17."), u("And 21?"), a("No: 21 = 3 x 7.", reasoning_content="21 is 3 times 7.")], PROMPT),
    ("thinking_field", [u("Is 21 prime?"), a("No: 21 = 3 x 7.", thinking="21 is 3 times 7.")], PROMPT),
    ("tool_call_reasoning", [u("Weather in Paris?"), a("", thinking="I should look it up.", tool_calls=[call("call_1", "get_weather", {"city": "Paris"})])], PROMPT),
    ("whitespace", [u("  hi there  "), a("  hello \n")], None),
    ("tool_call", [u("Weather in Paris?"), a("", tool_calls=[call("call_1", "get_weather", {"city": "Paris"})]), {"role": "tool", "tool_call_id": "call_1", "content": "18C"}, a("It is 18 degrees in Paris.")], PROMPT),
]


class Family:
    def __init__(self, family):
        directory = OUT / family / "model"
        self.tok = AutoTokenizer.from_pretrained(directory)
        generation = GenerationConfig.from_pretrained(directory)
        ids = generation.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        self.end_of_turn = [self.tok.eos_token]
        for token in self.tok.convert_ids_to_tokens(ids):
            if token not in self.end_of_turn:
                self.end_of_turn.append(token)
        self.generation_prompt = self.probe_generation_prompt()
        self.system_role = self.probe_system_role()

    def render(self, messages, generation_prompt=False):
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def ids(self, messages):
        out = self.tok.apply_chat_template(messages, tokenize=True)
        return out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out

    def probe_generation_prompt(self):
        """What the generation prompt adds after a user turn, and what a render without it closes with
        instead (Phi-3's templates close with the eos token)."""
        self.closing = ""
        try:
            without, with_ = self.render([u("x")]), self.render([u("x")], True)
        except jinja2.TemplateError:
            return None
        if with_.startswith(without):
            return with_[len(without):] or None
        eos = self.tok.eos_token
        if not without.rstrip().endswith(eos):
            return None
        open_ = without[: len(without.rstrip()) - len(eos)]
        if not with_.startswith(open_) or len(with_) == len(open_):
            return None
        self.closing = without[len(open_):]
        return with_[len(open_):]

    def probe_system_role(self):
        turns = [u("x"), a("y")]
        try:
            text = self.render([s("dn-system-probe")] + turns)
        except jinja2.TemplateError:
            try:
                self.render(turns)
                return "raises"
            except jinja2.TemplateError:
                return "rendered"
        return "rendered" if "dn-system-probe" in text else "dropped"

    def fit_system(self, messages):
        if not messages or messages[0]["role"] != "system" or self.system_role == "rendered":
            return messages, "as_is"
        if self.system_role == "raises":
            users = [i for i, m in enumerate(messages) if m["role"] == "user"]
            if not users:
                return messages, "as_is"
            system, rest = messages[0], [dict(m) for m in messages[1:]]
            if system["content"]:
                first = rest[users[0] - 1]
                first["content"] = system["content"] + "\n\n" + first["content"]
            return rest, "merged"
        if messages[-1]["role"] != "assistant":
            return messages, "as_is"
        return messages[1:], "dropped"

    def end_after(self, text, start):
        found = [(text.find(t, start), len(t)) for t in self.end_of_turn]
        found = [(at, n) for at, n in found if at >= 0]
        return min(found)[0] + min(found)[1] if found else None

    def marked(self, messages, full):
        """The one-render rule: spans from the contents' positions in the render."""
        if self.generation_prompt is None:
            return None
        open_, close = "\ue000", "\ue001"
        if any(open_ in m["content"] or close in m["content"] for m in messages):
            return None
        marked = [dict(m, content=open_ + m["content"] + close) if m["role"] == "assistant" else m for m in messages]
        try:
            text = self.render(marked)
        except jinja2.TemplateError:
            return None  # the markers made the template raise: the prefix rule, on the contents as they are
        plain, contents, start = [], [], None
        for ch in text:
            if ch == open_ and start is None:
                start = len(plain)
            elif ch == close and start is not None:
                contents.append((start, len(plain)))
                start = None
            elif ch in (open_, close):
                return None
            else:
                plain.append(ch)
        plain = "".join(plain)
        assistants = [m for m in messages if m["role"] == "assistant"]
        if plain != full or start is not None or len(contents) != len(assistants):
            return None
        spans = []
        for i, ((b, e), m) in enumerate(zip(contents, assistants)):
            nxt = contents[i + 1][0] if i + 1 < len(contents) else len(full)
            end = self.end_after(full[:nxt], e)
            if end is None or full[b:e] != m["content"] or not full[:b].endswith(self.generation_prompt):
                return None
            spans.append((b, end))
        return spans

    def span(self, messages, i, full):
        """The prefix rule for assistant message i; None when not prefix-stable."""
        before = self.render(messages[:i], True)
        through = self.render(messages[: i + 1])
        if self.closing and i + 1 < len(messages) and through.endswith(self.closing):
            through = through[: -len(self.closing)]
        if not through.startswith(before) or not full.startswith(through):
            return None
        segment = through[len(before):]
        content = messages[i]["content"]
        end = None
        for c in (content, content.strip()):
            if c and c in segment:
                end = self.end_after(segment, segment.rindex(c) + len(c))
                break
        if end is None:
            ends = [segment.rindex(t) + len(t) for t in self.end_of_turn if t in segment]
            end = max(ends) if ends else len(segment.rstrip())
        return len(before), len(before) + end

    def renders(self, messages):
        full = self.render(messages)
        spans = self.marked(messages, full)
        if spans is not None:
            return [(messages, full, spans)]
        assistants = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        spans = [self.span(messages, i, full) for i in assistants]
        if all(sp is not None for sp in spans):
            return [(messages, full, spans)]
        out = []
        for i in assistants:
            prefix = messages[: i + 1]
            text = self.render(prefix)
            sp = self.span(prefix, i, text)
            assert sp is not None, "not prefix-stable even per turn"
            out.append((prefix, text, [sp]))
        return out

    def example(self, messages, text, spans):
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        assert ids == self.ids(messages), "tokenizing the render differs from apply_chat_template"
        # Offsets are in characters; spans are in characters too (str indices).
        mask = [int(any(b <= o[0] < e for b, e in spans)) for o in enc["offset_mapping"]]
        return {"input_ids": ids, "loss_mask": mask}


def main():
    only = sys.argv[1:]
    for family in FAMILIES:
        if only and family not in only:
            continue
        f = Family(family)
        cases = []
        for name, messages, prompt in CASES:
            scaffolded = scaffold(messages, prompt)
            fitted, fit = f.fit_system(as_template_reads(scaffolded))
            case = {"name": name, "messages": messages, "system_prompt": prompt, "system_fit": fit}
            try:
                case["examples"] = [f.example(*r) for r in f.renders(fitted)]
            except jinja2.TemplateError as e:
                case = {"name": name, "messages": messages, "system_prompt": prompt, "error": str(e)}
            cases.append(case)
        (OUT / family / "chat_parity.json").write_text(json.dumps({
            "source": "scripts/reference/family_chat.py (transformers %s)" % transformers.__version__,
            "date": "%04d-%02d-%02d" % TEMPLATE_DATE,
            "generation_prompt": f.generation_prompt, "system_role": f.system_role,
            "end_of_turn": f.end_of_turn, "cases": cases,
        }, ensure_ascii=False, indent=1) + "\n")
        summary = ", ".join(
            f"{c['name']}: " + (f"error" if "error" in c else f"{len(c['examples'])} ex ({c['system_fit']})")
            for c in cases)
        print(f"{family} [system {f.system_role}, generation prompt {f.generation_prompt!r}]: {summary}")


main()
