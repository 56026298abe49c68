"""The official `anthropic` Python SDK against lyss-server's `/v1/messages`, with a lyss key,
reaching an OpenAI-compatible upstream.

Run by tests/tests/e2e.rs with LYSS_BASE_URL (the server's root) and LYSS_KEY set; the upstream
behind lyss is a wiremock fake that answers "Hello!" (usage 1117/46) and streams "Hel"+"lo"
(usage 9/12).
"""

import os

import anthropic

base = os.environ["LYSS_BASE_URL"]
key = os.environ["LYSS_KEY"]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)

message = client.messages.create(
    model="gpt-4o-mini",
    max_tokens=64,
    system="Be brief.",
    messages=[{"role": "user", "content": "hi"}],
)
assert message.type == "message", message
assert message.content[0].type == "text" and message.content[0].text == "Hello!", message
assert message.stop_reason == "end_turn", message
assert message.usage.input_tokens == 1117 and message.usage.output_tokens == 46, message.usage

with client.messages.stream(
    model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == "Hello", text
assert final.stop_reason == "end_turn", final
assert final.usage.output_tokens == 12, final.usage

events = [
    e.type
    for e in client.messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
    )
]
assert events[0] == "message_start" and events[-1] == "message_stop", events

bad = anthropic.Anthropic(base_url=base, api_key="lyss-sk-nope-nope", max_retries=0)
try:
    bad.messages.create(
        model="gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
except anthropic.AuthenticationError as e:
    assert e.status_code == 401
    assert e.body["error"]["type"] == "authentication_error", e.body
else:
    raise AssertionError("a bad key was accepted")

try:
    client.messages.create(
        model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
else:
    raise AssertionError("an unknown model was served")

print("anthropic SDK: ok")
