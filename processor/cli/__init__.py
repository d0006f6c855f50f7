"""The command-line entry points: `vigo-processor` (`worker.py`), `vigocli` (`vigocli.py`:
its commands; `api_client.py`: the HTTP client; `render.py`: the text it prints;
`deadletters.py` and `deadletter_topic.py`: `vigocli deadletters`), `vigo-publish`
(`publish.py`), `vigo-simulate` (`simulate.py`), and what they share (`kafka.py`).
Nothing here imports Faust at module level (tests/test_layout.py): a CLI starts fast and a
CLI error never drags in the worker."""
