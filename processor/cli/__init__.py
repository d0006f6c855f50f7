"""The command-line entry points: `vigo-processor` (`worker.py`), `vigocli` (`vigocli.py`,
`deadletters.py`), `vigo-publish` (`publish.py`), `vigo-simulate` (`simulate.py`), and what
they share (`kafka.py`). Nothing here imports Faust at module level (tests/test_layout.py):
a CLI starts fast and a CLI error never drags in the worker."""
