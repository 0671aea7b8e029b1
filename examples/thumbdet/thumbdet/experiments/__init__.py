"""Experiments on generated data: the demo (Table 2, Figs. 1, 5, 6) and the ablations
(Tables 3-6), their recipes, phase cache, measurements, figures and reports."""
