"""Front ends that serve a loaded model: the OpenAI-compatible HTTP server and its web chat page
(`brlm serve`, brlm.serve.app). The terminal chat lives in brlm.infer.repl."""
