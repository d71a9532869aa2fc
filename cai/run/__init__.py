"""`cai run`: recipes, the stage pipeline and the HTML report."""
