/**
 * A VerticalPodAutoscaler model (autoscaling.k8s.io/v1) for validation: no published
 * `@kubernetes-models` package covers VPA, so its spec schema is written here from the fields
 * of the upstream CRD (kubernetes/autoscaler, vertical-pod-autoscaler/deploy) that manifests use,
 * with unknown fields refused so a typo fails.
 */
import { Ajv } from "ajv";
import { Model } from "@kubernetes-models/base";

const QUANTITY = {
  anyOf: [
    { type: "integer" },
    {
      type: "string",
      pattern:
        "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$",
    },
  ],
};
const RESOURCE_LIST = { type: "object", additionalProperties: QUANTITY };

/** The CRD's `spec` (v1), strict about unknown fields. */
const SCHEMA = {
  type: "object",
  required: ["apiVersion", "kind", "metadata", "spec"],
  properties: {
    apiVersion: { const: "autoscaling.k8s.io/v1" },
    kind: { const: "VerticalPodAutoscaler" },
    metadata: {
      type: "object",
      required: ["name"],
      properties: { name: { type: "string", minLength: 1 } },
    },
    spec: {
      type: "object",
      required: ["targetRef"],
      additionalProperties: false,
      properties: {
        targetRef: {
          type: "object",
          required: ["kind", "name"],
          additionalProperties: false,
          properties: {
            apiVersion: { type: "string" },
            kind: { type: "string" },
            name: { type: "string" },
          },
        },
        updatePolicy: {
          type: "object",
          additionalProperties: false,
          properties: {
            updateMode: { enum: ["Off", "Initial", "Recreate", "InPlaceOrRecreate", "Auto"] },
            minReplicas: { type: "integer" },
          },
        },
        resourcePolicy: {
          type: "object",
          additionalProperties: false,
          properties: {
            containerPolicies: {
              type: "array",
              items: {
                type: "object",
                additionalProperties: false,
                properties: {
                  containerName: { type: "string" },
                  mode: { enum: ["Auto", "Off"] },
                  controlledResources: { type: "array", items: { type: "string" } },
                  controlledValues: { enum: ["RequestsAndLimits", "RequestsOnly"] },
                  minAllowed: RESOURCE_LIST,
                  maxAllowed: RESOURCE_LIST,
                },
              },
            },
          },
        },
        recommenders: {
          type: "array",
          items: {
            type: "object",
            required: ["name"],
            properties: { name: { type: "string" } },
          },
        },
      },
    },
  },
};

const validateVpa = new Ajv({ allErrors: true, strict: false }).compile(SCHEMA);

/** A VPA object; `validate()` throws with every schema error. */
export class VerticalPodAutoscaler extends Model<Record<string, unknown>> {
  static readonly apiVersion = "autoscaling.k8s.io/v1";
  static readonly kind = "VerticalPodAutoscaler";

  override validate(): void {
    if (!validateVpa(this.toJSON())) {
      throw new Error(
        `VerticalPodAutoscaler is invalid: ${
          validateVpa.errors!.map((e) => `${e.instancePath} ${e.message}`).join("; ")
        }`,
      );
    }
  }
}
