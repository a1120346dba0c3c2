"""The command lines over ``unsupseg.infer``: ``seginfer`` (seginfer.py) and ``segreport`` (segreport.py)."""
