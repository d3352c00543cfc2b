"""The CRM\x27s services. Each subpackage is deployed on its own and never imports another."""
