"""lyss's MCP memory server, driven by the official MCP SDK's client (PyPI `mcp`).

Env: LYSS_MCP_URL (…/mcp), LYSS_KEY (the person's key), LYSS_OTHER_KEY (another user's key).
Connects as a 2026 client (`server/discover`) and as a handshake-era one (`initialize`, what
Claude Code and LobeChat speak), lists the tools, calls each, and checks that another key and
another end-user of the same key see nothing. Prints what the chat check needs as JSON; exits
non-zero with the reason on any failure.
"""

import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

URL = os.environ["LYSS_MCP_URL"]
KEY = os.environ["LYSS_KEY"]
OTHER_KEY = os.environ["LYSS_OTHER_KEY"]
TOOLS = {"search_memories", "remember", "get_profile", "correct_memory", "forget_memory"}


def client(key: str, end_user: str | None = None, mode: str = "auto") -> Client:
    headers = {"Authorization": f"Bearer {key}"}
    if end_user is not None:
        headers["X-Lyss-User"] = end_user
    http = create_mcp_http_client(headers=headers)
    return Client(streamable_http_client(URL, http_client=http), mode=mode, cache=None)


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def check(ok: bool, what: str) -> None:
    if not ok:
        sys.exit(f"mcp check failed: {what}")


async def call(c: Client, tool: str, args: dict | None = None, error: bool = False) -> str:
    result = await c.call_tool(tool, args or {})
    out = text(result)
    check(bool(result.is_error) == error, f"{tool}({args}) is_error={result.is_error}: {out}")
    return out


def memory_id(line: str) -> str:
    check(line.startswith("[") and "]" in line, f"no id in {line!r}")
    return line[1 : line.index("]")]


async def main() -> None:
    found = {}
    for mode in ("auto", "legacy"):
        async with client(KEY, mode=mode) as c:
            tools = await c.list_tools()
            names = {t.name for t in tools.tools}
            check(names == TOOLS, f"{mode}: tools {sorted(names)}")
            for t in tools.tools:
                check(bool(t.description), f"{t.name} has no description")
                check(t.input_schema.get("type") == "object", f"{t.name} schema {t.input_schema}")
            found[mode] = len(names)

    async with client(KEY) as c:
        said = await call(c, "remember", {"text": "I am vegetarian and I live in Lyon."})
        check(said.startswith("Remembered (profile): ["), said)
        lyon = memory_id(said.split(": ", 1)[1])
        again = await call(c, "remember", {"text": "I am vegetarian and I live in Lyon."})
        check(again.startswith("Already remembered"), again)
        bike = await call(c, "remember", {"text": "My bike is a blue Gazelle with a wicker basket."})
        check(bike.startswith("Remembered: ["), bike)
        bike = memory_id(bike.split(": ", 1)[1])

        hits = await call(c, "search_memories", {"query": "where do I live? Lyon"})
        check(f"[{lyon}]" in hits and "Lyon" in hits, hits)
        first = hits.splitlines()[0]
        check(first[len(lyon) + 3 : len(lyon) + 13].count("-") == 2, f"undated: {first}")
        profile = await call(c, "get_profile")
        check("I am vegetarian and I live in Lyon." in profile, profile)

        fixed = await call(c, "correct_memory", {"id": lyon, "text": "I am vegetarian and I live in Grenoble."})
        check(fixed.startswith("Corrected: [") and "Grenoble" in fixed, fixed)
        profile = await call(c, "get_profile")
        check("Grenoble" in profile and "Lyon" not in profile, profile)

        check("empty" in await call(c, "remember", {"text": "   "}, error=True), "empty text")
        check("longer than 2000" in await call(c, "remember", {"text": "x" * 2001}, error=True), "long text")
        missing = await call(c, "forget_memory", {"id": "no-such-memory"}, error=True)
        check("not found" in missing.lower(), missing)

    # Another user's key, and another end-user of the same key: nothing of the above.
    async with client(OTHER_KEY) as c:
        check("Grenoble" not in await call(c, "search_memories", {"query": "Grenoble vegetarian"}), "other key searched")
        check(await call(c, "get_profile") == "No profile yet.", "other key's profile")
        for tool, args in [("forget_memory", {"id": lyon}), ("correct_memory", {"id": lyon, "text": "I live in Paris."})]:
            refused = await call(c, tool, args, error=True)
            check("not found" in refused.lower(), f"other key {tool}: {refused}")
    async with client(KEY, end_user="ann-phone") as c:
        check("Grenoble" not in await call(c, "search_memories", {"query": "Grenoble vegetarian"}), "other end-user searched")
        refused = await call(c, "forget_memory", {"id": bike}, error=True)
        check("not found" in refused.lower(), f"other end-user forget: {refused}")
        said = await call(c, "remember", {"text": "My phone is a Fairphone."})
        check(said.startswith("Remembered"), said)

    async with client(KEY, end_user="x" * 257) as c:
        refused = await call(c, "get_profile", error=True)
        check("longer than 256" in refused, f"a too long end-user id: {refused}")

    async with client(KEY) as c:
        check("Fairphone" not in await call(c, "search_memories", {"query": "Fairphone phone"}), "end-user leaked")
        profile = await call(c, "get_profile")
        check("Grenoble" in profile, f"the other key changed it: {profile}")
        gone = await call(c, "forget_memory", {"id": bike})
        check(gone == f"Forgot [{bike}].", gone)
        check("Gazelle" not in await call(c, "search_memories", {"query": "bike Gazelle basket"}), "forgotten bike found")

    print(json.dumps({"profile_id": lyon, "forgotten_id": bike, "tools": found}))


asyncio.run(main())
