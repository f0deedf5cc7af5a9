"""The analysis of a study: expert outcomes, agreement, intra-rater consistency, expert vs metric
concordance, ranking, the joint embedding, figures, the exported report, and the Analysis tab."""
