"""Chat messages as dn normalizes dataset rows into them, and the capability system prompt applied as dn
applies it: shared by the chat-template parity references (chat_parity.py, family_chat.py)."""


def u(text):
    return {"role": "user", "content": text}


def a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


def s(text):
    return {"role": "system", "content": text}


def call(id_, name, arguments):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def scaffold(messages, prompt):
    """The prompt prepended as a system message, or merged as prompt + blank line + content into a first
    system message."""
    messages = [dict(m) for m in messages]
    if not prompt:
        return messages
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = prompt + "\n\n" + messages[0]["content"]
    else:
        messages.insert(0, s(prompt))
    return messages


def as_template_reads(messages):
    """Each message as dn hands it to a template: an assistant's reasoning (a row's `reasoning_content`
    or `thinking`) under both names, `reasoning_content` (Qwen3) and `thinking` (gpt-oss)."""
    out = []
    for m in messages:
        reasoning = m.get("reasoning_content", m.get("thinking"))
        out.append(dict(m, reasoning_content=reasoning, thinking=reasoning) if reasoning is not None else m)
    return out
