"""A separate MCP client process for the server tests, written against the ``mcp`` SDK alone.

``python mcp_catalogue_client.py URL`` connects with the bearer token in ``SCIAGENT_TEST_TOKEN``, lists the
tools, asks ``structure_info`` about villin, runs a short ``simulate`` and follows it through the task
tools to its result; it prints one JSON object of what it saw.
"""

from __future__ import annotations

import json
import os
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

SIMULATION = {"structure": "villin", "length_ps": 1, "timestep_fs": 4, "solvent": "vacuum"}


async def main(url: str) -> dict:
    headers = {"Authorization": f"Bearer {os.environ['SCIAGENT_TEST_TOKEN']}"}
    progress: list[str] = []

    async def heard(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        listing = await client.list_tools()
        info = await client.call_tool("structure_info", {"structure": "villin"})
        started = await client.call_tool("simulate", SIMULATION)
        task_id = started.structured_content["task_id"]
        states = [started.structured_content["state"]]
        for _ in range(20):  # each wait is a short call (the server caps it); a real client loops the same
            waited = await client.call_tool(
                "wait_for_task", {"task_id": task_id, "timeout_s": 3600}, progress_callback=heard
            )
            states.append(waited.structured_content["state"])
            if states[-1] not in ("pending", "running"):
                break
        result = await client.call_tool("task_result", {"task_id": task_id})
        listed = await client.call_tool("list_tasks", {})
    return {
        "tools": {tool.name: tool.input_schema for tool in listing.tools},
        "output_schemas": {tool.name: tool.output_schema for tool in listing.tools},
        "structure_info": info.structured_content,
        "task_id": task_id,
        "states": states,
        "progress": progress,
        "result": result.structured_content,
        "result_error": result.is_error,
        "listed": listed.structured_content,
    }


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, sys.argv[1])))
