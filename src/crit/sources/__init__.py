"""Where patient records come from: JSON read exactly (`records`), cohort files (`cohort`)."""
