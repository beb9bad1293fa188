"""What people read (layer `reporting`, docs/architecture.md): run reports and their plots
(report, plots, family_plots/), sweep reports (sweep_report, sweep_plots) and the dataset index
page (index_page)."""
