#!/usr/bin/env bash
# Deploy the videoanom Azure ML infrastructure (main.bicep) into one resource group and print
# the lines to put in .env.
#
#   environment_setup/infra/deploy.sh             # create or update (idempotent)
#   environment_setup/infra/deploy.sh --what-if   # show what would change, change nothing
#
# Needs the Azure CLI (`az`, which builds Bicep itself), `az login`, and on the resource group
# Owner, or Contributor + User Access Administrator (the template assigns roles).
#
# Settings come from the environment (the same names as .env; unset = the default shown):
#   AZURE_SUBSCRIPTION_ID      subscription to deploy to (default: az's current one)
#   AZURE_RESOURCE_GROUP       rg-videoanom
#   AZURE_LOCATION             westeurope
#   AML_WORKSPACE_NAME         mlw-videoanom
#   AML_CPU_CLUSTER, AML_CPU_VM_SIZE, AML_CPU_MIN_NODES, AML_CPU_MAX_NODES,
#   AML_GPU_CLUSTER, AML_GPU_VM_SIZE, AML_GPU_MIN_NODES, AML_GPU_MAX_NODES,
#   AML_VM_PRIORITY            the clusters (default: main.parameters.json)
#   VIDEOANOM_OPERATOR_OBJECT_ID   object id granted AzureML Data Scientist + Storage Blob Data
#                              Contributor (default: the signed-in user or service principal;
#                              "none" grants nobody)
#   VIDEOANOM_OPERATOR_TYPE    User, Group or ServicePrincipal (default: from the login)
# To take them from .env:  set -a; source .env; set +a; environment_setup/infra/deploy.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATE="$HERE/main.bicep"
PARAMETERS="$HERE/main.parameters.json"
DEPLOYMENT_NAME="videoanom-infra"
PROVIDERS=(
  Microsoft.MachineLearningServices
  Microsoft.Storage
  Microsoft.KeyVault
  Microsoft.ContainerRegistry
  Microsoft.Insights
  Microsoft.OperationalInsights
)

usage() {
  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

WHAT_IF=false
for arg in "$@"; do
  case "$arg" in
    --what-if) WHAT_IF=true ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "deploy.sh: unknown argument '$arg' (use --what-if or --help)" >&2
      exit 2
      ;;
  esac
done

command -v az >/dev/null || {
  echo "deploy.sh: the Azure CLI (az) is not installed: https://aka.ms/azure-cli" >&2
  exit 1
}
az account show --output none 2>/dev/null || {
  echo "deploy.sh: not logged in; run 'az login' first" >&2
  exit 1
}

if [[ -n "${AZURE_SUBSCRIPTION_ID:-}" ]]; then
  az account set --subscription "$AZURE_SUBSCRIPTION_ID"
fi
SUBSCRIPTION_ID="$(az account show --query id --output tsv)"
RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-rg-videoanom}"
LOCATION="${AZURE_LOCATION:-westeurope}"
WORKSPACE="${AML_WORKSPACE_NAME:-mlw-videoanom}"

# Parameters: the file, then one override per variable that is set.
OVERRIDES=("workspaceName=$WORKSPACE" "location=$LOCATION")
add_override() { # add_override PARAM VARIABLE
  local value="${!2:-}"
  if [[ -n "$value" ]]; then OVERRIDES+=("$1=$value"); fi
}
add_override cpuClusterName AML_CPU_CLUSTER
add_override cpuVmSize AML_CPU_VM_SIZE
add_override cpuMinNodes AML_CPU_MIN_NODES
add_override cpuMaxNodes AML_CPU_MAX_NODES
add_override gpuClusterName AML_GPU_CLUSTER
add_override gpuVmSize AML_GPU_VM_SIZE
add_override gpuMinNodes AML_GPU_MIN_NODES
add_override gpuMaxNodes AML_GPU_MAX_NODES
add_override vmPriority AML_VM_PRIORITY

# The operator: whoever deploys, unless told otherwise.
OPERATOR_ID="${VIDEOANOM_OPERATOR_OBJECT_ID:-}"
OPERATOR_TYPE="${VIDEOANOM_OPERATOR_TYPE:-}"
if [[ -z "$OPERATOR_ID" ]]; then
  case "$(az account show --query user.type --output tsv)" in
    user)
      OPERATOR_ID="$(az ad signed-in-user show --query id --output tsv 2>/dev/null || true)"
      OPERATOR_TYPE="${OPERATOR_TYPE:-User}"
      ;;
    servicePrincipal)
      OPERATOR_ID="$(az ad sp show --id "$(az account show --query user.name --output tsv)" \
        --query id --output tsv 2>/dev/null || true)"
      OPERATOR_TYPE="${OPERATOR_TYPE:-ServicePrincipal}"
      ;;
  esac
fi
if [[ "$OPERATOR_ID" == "none" ]]; then
  echo "deploy.sh: VIDEOANOM_OPERATOR_OBJECT_ID=none: no operator role assignments" >&2
elif [[ -n "$OPERATOR_ID" ]]; then
  OVERRIDES+=("operatorPrincipalId=$OPERATOR_ID" "operatorPrincipalType=${OPERATOR_TYPE:-User}")
else
  echo "deploy.sh: could not find the signed-in identity's object id; no operator role" \
    "assignments (set VIDEOANOM_OPERATOR_OBJECT_ID, or see the README)" >&2
fi

echo "subscription   $SUBSCRIPTION_ID"
echo "resource group $RESOURCE_GROUP ($LOCATION)"
echo "workspace      $WORKSPACE"
echo "parameters     $PARAMETERS ${OVERRIDES[*]}"

if [[ "$WHAT_IF" == true ]]; then
  if [[ "$(az group exists --name "$RESOURCE_GROUP")" != "true" ]]; then
    echo "what-if: resource group $RESOURCE_GROUP does not exist; a deployment would create it" \
      "and every resource in main.bicep."
    exit 0
  fi
  az deployment group what-if \
    --name "$DEPLOYMENT_NAME" \
    --resource-group "$RESOURCE_GROUP" \
    --template-file "$TEMPLATE" \
    --parameters "@$PARAMETERS" \
    --parameters "${OVERRIDES[@]}"
  exit 0
fi

for namespace in "${PROVIDERS[@]}"; do
  state="$(az provider show --namespace "$namespace" --query registrationState --output tsv)"
  if [[ "$state" != "Registered" ]]; then
    echo "registering resource provider $namespace"
    az provider register --namespace "$namespace" --wait
  fi
done

az group create --name "$RESOURCE_GROUP" --location "$LOCATION" \
  --tags project=videoanom --output none

az deployment group create \
  --name "$DEPLOYMENT_NAME" \
  --resource-group "$RESOURCE_GROUP" \
  --template-file "$TEMPLATE" \
  --parameters "@$PARAMETERS" \
  --parameters "${OVERRIDES[@]}" \
  --output none

# The deployment's outputs, one per line, in this order.
OUTPUT_NAMES=(subscriptionId resourceGroupName workspaceName location storageAccountName
  cpuClusterName gpuClusterName)
QUERY="["
for name in "${OUTPUT_NAMES[@]}"; do QUERY+="properties.outputs.$name.value,"; done
QUERY="${QUERY%,}]"
OUTPUTS=()
while IFS= read -r line; do # not mapfile: macOS ships bash 3.2
  OUTPUTS+=("${line%$'\r'}")
done < <(
  az deployment group show --name "$DEPLOYMENT_NAME" --resource-group "$RESOURCE_GROUP" \
    --query "$QUERY" --output tsv
)
if [[ "${#OUTPUTS[@]}" -ne "${#OUTPUT_NAMES[@]}" ]]; then
  echo "deploy.sh: deployment $DEPLOYMENT_NAME has unexpected outputs: ${OUTPUTS[*]}" >&2
  exit 1
fi
OUT_SUB="${OUTPUTS[0]}" OUT_RG="${OUTPUTS[1]}" OUT_WS="${OUTPUTS[2]}" OUT_LOC="${OUTPUTS[3]}"
OUT_ST="${OUTPUTS[4]}" OUT_CPU="${OUTPUTS[5]}" OUT_GPU="${OUTPUTS[6]}"

cat <<EOF

Deployed. Put these in .env (the other AML_* settings keep their defaults):

AZURE_SUBSCRIPTION_ID=$OUT_SUB
AZURE_RESOURCE_GROUP=$OUT_RG
AML_WORKSPACE_NAME=$OUT_WS
AZURE_LOCATION=$OUT_LOC
AML_CPU_CLUSTER=$OUT_CPU
AML_GPU_CLUSTER=$OUT_GPU
AML_DATASTORE_NAME=workspaceblobstore

Location folders go under AML_DATASTORE_PATH (default videoanom) in the workspace's default
datastore, i.e. the azureml-blobstore-* container of storage account $OUT_ST:

  az storage container list --account-name $OUT_ST --auth-mode login --query "[].name" -o tsv

Then: videoanom azure publish && videoanom azure schedule
EOF
