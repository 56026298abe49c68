"""The official `openai` Python SDK against a running lyss-server, as a new user would use it.

Run by tests/tests/e2e.rs with LYSS_BASE_URL, LYSS_KEY, LYSS_BROKE_KEY (a key whose budget
admits nothing) and LYSS_EXPECT_MODELS set; the
upstream behind lyss is a wiremock fake that answers "Hello!" (chat), "Hel"+"lo" (stream, with
usage 9/12) and a 3-float embedding.
"""

import os
import sys

import openai

base = os.environ["LYSS_BASE_URL"]
key = os.environ["LYSS_KEY"]
expected_models = sorted(os.environ["LYSS_EXPECT_MODELS"].split(","))
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)

ids = sorted(m.id for m in client.models.list())
assert ids == expected_models, f"models: {ids} != {expected_models}"

reply = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
)
assert reply.choices[0].message.content == "Hello!", reply
assert reply.usage.total_tokens == 1163, reply.usage

# LobeChat's default model, served through an alias.
reply = client.chat.completions.create(
    model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
)
assert reply.choices[0].message.content == "Hello!"

chunks = list(
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "Hello", text
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12, chunks[-1]

plain = list(
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
)
assert all(c.usage is None for c in plain), "usage chunk sent without being asked for"

# The SDK asks for base64 by default and decodes it to floats.
emb = client.embeddings.create(model="text-embedding-3-small", input="hello")
assert emb.data[0].embedding == [0.5, -1.0, 0.25], emb.data[0].embedding

try:
    openai.OpenAI(base_url=base, api_key="lyss-sk-bad", max_retries=0).models.list()
    sys.exit("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", e

try:
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    sys.exit("a model outside the allow-list was served")
except (openai.NotFoundError, openai.PermissionDeniedError) as e:
    assert e.code == "model_not_found", e

# The Responses API (`client.responses.create`), on the same pipeline.
first = client.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="hi")
assert first.output_text == "Hello!", first
assert first.status == "completed" and first.usage.input_tokens == 1117, first.usage
follow = client.responses.create(
    model="gpt-4o-mini", input="and again?", previous_response_id=first.id
)
assert follow.output_text == "Hello!" and follow.previous_response_id == first.id, follow
# Kept responses are read back and deleted (`client.responses.retrieve` / `.delete`).
again = client.responses.retrieve(first.id)
assert again.id == first.id and again.output_text == "Hello!", again
client.responses.delete(follow.id)
try:
    client.responses.retrieve(follow.id)
    sys.exit("a deleted response was read back")
except openai.NotFoundError as e:
    assert e.code == "not_found", e

events = list(client.responses.create(model="gpt-4o-mini", input="hi", stream=True))
assert events[0].type == "response.created", events[0]
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == "Hello", text
done = events[-1]
assert done.type == "response.completed", done
assert done.response.output_text == "Hello" and done.response.usage.output_tokens == 12, done

with client.responses.stream(model="gpt-4o-mini", input="hi") as stream:
    final = stream.get_final_response()
assert final.output_text == "Hello", final

try:
    client.responses.create(model="gpt-4o", input="hi")
    sys.exit("a model outside the allow-list was served by the Responses API")
except (openai.NotFoundError, openai.PermissionDeniedError) as e:
    assert e.code == "model_not_found", e

broke = openai.OpenAI(base_url=base, api_key=os.environ["LYSS_BROKE_KEY"], max_retries=0)
try:
    broke.responses.create(model="gpt-4o-mini", input="hi")
    sys.exit("a request over budget was served by the Responses API")
except openai.RateLimitError as e:
    assert e.code == "insufficient_quota", e

print("openai sdk: ok")
