"""The official `openai` Python SDK against a running lyss-server, as a new user would use it.

Run by tests/tests/e2e.rs with LYSS_BASE_URL, LYSS_KEY and LYSS_EXPECT_MODELS set; the
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

print("openai sdk: ok")
