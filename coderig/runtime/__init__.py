"""Code that ships and runs on its own (nodes, the AWS Lambda, the Kubernetes CronJob): standard
library only, so each of these modules imports nothing outside it and the standard library."""
