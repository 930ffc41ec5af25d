"""openai-python (any of 1.x, 2.x, 3.x) against Responsa, run in the venv that holds it.

Usage: RESPONSA_BASE_URL=... RESPONSA_API_KEY=... python openai_sdk.py all|SCENARIO...
The last stdout line is a JSON summary for the test. Needs nothing but `openai`.
"""

from __future__ import annotations

import json
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["RESPONSA_BASE_URL"], api_key=os.environ["RESPONSA_API_KEY"],
                max_retries=0)
WEATHER = {
    "type": "function", "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


def text() -> dict:
    r = client.responses.create(model="gpt-4.1", input="Say hello", include=["reasoning.encrypted_content"],
                                store=False)
    return {"id": r.id, "output_text": r.output_text, "status": r.status}


def stream() -> dict:
    types = [ev.type for ev in client.responses.create(model="gpt-4.1", input="Count", stream=True)]
    with client.responses.stream(model="gpt-4.1", input="Count again") as s:
        deltas = [ev.delta for ev in s if ev.type == "response.output_text.delta"]
        final = s.get_final_response()
    return {"types": types, "helper_text": "".join(deltas), "helper_final": final.output_text}


def tools() -> dict:
    first = client.responses.create(model="gpt-4.1", input="Weather in Paris?", tools=[WEATHER])
    call = next(item for item in first.output if item.type == "function_call")
    output = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 21})}
    chained = client.responses.create(model="gpt-4.1", previous_response_id=first.id, input=[output],
                                      tools=[WEATHER])
    history = [{"role": "user", "content": "Weather in Paris?"},
               *[item.model_dump(exclude_none=True) for item in first.output], output]
    stateless = client.responses.create(model="gpt-4.1", input=history, tools=[WEATHER], store=False)
    return {"call": {"name": call.name, "arguments": json.loads(call.arguments)},
            "chained": chained.output_text, "stateless": stateless.output_text}


def retrieve() -> dict:
    created = client.responses.create(model="gpt-4.1", input="Keep this")
    got = client.responses.retrieve(created.id, include=["reasoning.encrypted_content",
                                                         "message.output_text.logprobs"])
    return {"same": got.id == created.id, "output_text": got.output_text}


SCENARIOS = {"text": text, "stream": stream, "tools": tools, "retrieve": retrieve}

if __name__ == "__main__":
    # One process runs several scenarios in order: importing the SDK is most of the time.
    names = list(SCENARIOS) if sys.argv[1] == "all" else sys.argv[1:]
    result = {name: SCENARIOS[name]() for name in names}
    result["sdk_version"] = openai.__version__
    print(json.dumps(result))
