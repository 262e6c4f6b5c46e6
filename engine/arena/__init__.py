"""The blind arena: battles between model settings, preference votes, and ratings from them.

settings.py  what a competitor is (model + steps + guidance + any later generation option)
battles.py   preparing battles in a batch, pairing raters with the least-voted comparisons
votes.py     checking, recording, undoing and exporting votes
ratings.py   Bradley–Terry with bootstrap intervals, win rates, position bias, rater agreement
leaderboard.py  the tables, recomputed from the votes
"""
