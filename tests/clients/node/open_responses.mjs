// `@ai-sdk/open-responses`: the AI SDK's provider for any Open Responses endpoint.
import { createOpenResponses } from "@ai-sdk/open-responses";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";
import { apiKey, baseURL, main } from "./common.mjs";

// This provider takes the endpoint's full URL, not a base URL.
const provider = createOpenResponses({ name: "responsa", url: `${baseURL}/responses`, apiKey });
const model = provider("gpt-4.1");
const toolCalls = [];
const tools = {
  get_weather: tool({
    description: "Current weather for a city",
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      toolCalls.push(city);
      return { city, temp_c: 21 };
    },
  }),
};

await main({
  async text() {
    const r = await generateText({ model, system: "Be brief.", prompt: "Say hello", maxRetries: 0 });
    return { text: r.text, finishReason: r.finishReason, reasoning: r.reasoningText ?? null, usage: r.usage };
  },

  async stream() {
    const result = streamText({ model, prompt: "Count", includeRawChunks: true, maxRetries: 0 });
    const raw = [];
    const deltas = [];
    for await (const part of result.fullStream) {
      if (part.type === "raw") raw.push(part.rawValue);
      if (part.type === "text-delta") deltas.push(part.text);
      if (part.type === "error") throw part.error;
    }
    return {
      deltas, text: await result.text, reasoning: await result.reasoningText,
      finishReason: await result.finishReason, raw,
    };
  },

  async tools() {
    const r = await generateText({
      model, system: "Use tools.", prompt: "Weather in Paris?", tools, stopWhen: stepCountIs(3), maxRetries: 0,
    });
    return { text: r.text, steps: r.steps.length, toolCalls, finishReason: r.finishReason };
  },
});
