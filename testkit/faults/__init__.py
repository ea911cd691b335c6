"""Issue 5's fault scenarios: a whole deployment (``stack``), what is judged after each run
(``judgement``) and the scenarios themselves (``scenarios``), shared by tests/faults (CI sizes)
and soak/faults.py (full sizes)."""
