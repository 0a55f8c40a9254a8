"""The baseline: the script a user would write in ten minutes instead of using bulkpatch.

Exactly this and no slower: one default ``aiohttp.ClientSession`` with a
``TCPConnector(limit=C)``, ``asyncio.gather`` over one coroutine per job, each under an
``asyncio.Semaphore(C)``, ``data=json.dumps(patch)``, the five headers, ``await r.json()``.

    python benchmarks/naive.py JOBS.ndjson ENDPOINT CONCURRENCY
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import aiohttp


def load(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


async def main(jobs: list[dict[str, Any]], endpoint: str, concurrency: int) -> int:
    headers = {
        "Authorization": f"Bearer {os.environ['ADOBE_ACCESS_TOKEN']}",
        "x-api-key": os.environ["ADOBE_API_KEY"],
        "x-gw-ims-org-id": os.environ["ADOBE_ORG_ID"],
        "x-sandbox-name": os.environ["ADOBE_SANDBOX_NAME"],
        "Content-Type": "application/json",
    }
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one(job: dict[str, Any]) -> Any:
            async with semaphore:
                url = f"{endpoint}/offers/{job['id']}?offer-type=personalized"
                async with session.patch(url, data=json.dumps(job["patch"]), headers=headers) as r:
                    return await r.json()

        results = await asyncio.gather(*(one(job) for job in jobs))
    return len(results)


if __name__ == "__main__":
    done = asyncio.run(main(load(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
    print(done)
