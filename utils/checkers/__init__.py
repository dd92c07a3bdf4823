"""The exercise checkers, one module per chapter, kept apart from the library code they check.

A lab imports its chapter's checkers (``from utils.checkers.prompting import check_top_k_filter``);
each checker is built with :mod:`utils.checks` and registered in :data:`utils.exercises.EXERCISES`.
"""
